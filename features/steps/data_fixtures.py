"""Shared fixtures of the data-side features: catalog, provisioning, registries, preflight, engine, resources.

Everything here is real: hive and queen processes (``python -m rbee_runtime.hive|queen``), model files on
disk, a local HTTP model server with Range support, the recorded ``nvidia-smi`` outputs of
``tests/deploy/fixtures/`` and the SSH + systemd test hosts (``test_hosts``, from ``tests/hosts/plugin.py``:
one session lease, booted once per session, always torn down). Every process a fixture starts is killed
at the end of its scenario, also when a step fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rbee.engine.detect import parse_nvidia_smi
from rbee_runtime import __version__
from rbee_runtime.common.contracts import GpuInfo, Heartbeat, Resources, WorkerInfo, WorkerState
from tests.hive.support import HiveFactory, HiveProcess, free_port, wait_until
from tests.models.server import ModelServer, model_server

# The test hosts (fixture ``test_hosts``, marker ``hosts``): the same plugin tests/conftest.py loads,
# registered once per session however many conftests name it.
pytest_plugins = ["tests.hosts.plugin"]

REPO = Path(__file__).resolve().parents[2]
NVIDIA_SMI_FIXTURES = REPO / "tests" / "deploy" / "fixtures"
MIB = 1024 * 1024
GIB = 1024 * MIB


def parse_size(text: str) -> int:
    """``1234`` → 1234, ``3 MiB`` → 3145728, ``4 GiB``, ``1 PiB``, ``1.5 KiB`` (binary units)."""
    units = {"b": 1, "bytes": 1, "kib": 1024, "mib": MIB, "gib": GIB, "tib": 1024 * GIB, "pib": 1024**2 * GIB}
    number, _, unit = text.strip().partition(" ")
    return int(float(number) * units[unit.strip().lower() or "b"])


def gpus_from_nvidia_smi(text: str) -> list[GpuInfo]:
    """The GPUs of a recorded ``nvidia-smi`` CSV as the hive sees them (bytes), via the deploy's parser."""
    return [
        GpuInfo(
            index=g.index,
            name=g.name,
            memory_total_bytes=g.memory_total_mib * MIB,
            memory_free_bytes=g.memory_free_mib * MIB,
        )
        for g in parse_nvidia_smi(text)
    ]


# --------------------------------------------------------------------------- wire objects


def worker(worker_id: str, state: str, model_id: str = "tinyllama-q4", hive_id: str = "gpu-box") -> WorkerInfo:
    """A worker as a hive reports it in its heartbeat."""
    now = time.time()
    return WorkerInfo(
        worker_id=worker_id,
        hive_id=hive_id,
        model_id=model_id,
        url=f"http://{hive_id}.invalid:7840/{worker_id}",
        state=WorkerState(state),
        started_at=now,
        last_activity=now,
    )


def heartbeat(hive_id: str, workers: list[WorkerInfo], version: str = __version__) -> Heartbeat:
    """The heartbeat a hive of ``version`` (default: this release) sends to the queen."""
    return Heartbeat(
        hive_id=hive_id,
        url=f"http://{hive_id}.invalid:7835",
        version=version,
        backends=["cpu"],
        resources=Resources(
            ram_total_bytes=16 << 30,
            ram_available_bytes=8 << 30,
            disk_total_bytes=100 << 30,
            disk_available_bytes=50 << 30,
            cpu_count=8,
        ),
        models=sorted({w.model_id for w in workers}) or ["tinyllama-q4"],
        workers=workers,
    )


# --------------------------------------------------------------------------- scenario state and files


@pytest.fixture
def data_ctx() -> dict[str, Any]:
    """What one scenario's steps hand to each other (results, errors, paths)."""
    return {}


@pytest.fixture
def model_files(tmp_path: Path) -> Callable[..., Path]:
    """Write a GGUF-looking model file: ``model_files("m.gguf", 4096)``; ``sparse=True`` costs no disk."""
    folder = tmp_path / "models"

    def make(name: str, size: int, *, sparse: bool = False, seed: int | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if sparse:
            with path.open("wb") as out:
                out.write(b"GGUF")
                out.truncate(size)
        else:
            rng = random.Random(seed if seed is not None else name)
            path.write_bytes(b"GGUF" + rng.randbytes(max(0, size - 4)))
        return path

    return make


@pytest.fixture
def nvidia_smi() -> Callable[[str], str]:
    """A recorded ``nvidia-smi`` output of ``tests/deploy/fixtures/`` by file name."""

    def read(name: str) -> str:
        return (NVIDIA_SMI_FIXTURES / name).read_text()

    return read


# --------------------------------------------------------------------------- model server


@pytest.fixture
def model_http_server() -> Iterator[ModelServer]:
    """A threaded HTTP server on 127.0.0.1 serving model files (Range requests, fault injection)."""
    with model_server() as running:
        yield running


@pytest.fixture
def clean_hf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Hugging Face token or endpoint from the environment leaks into a download."""
    for name in ("HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- hives


class Hives:
    """Real hive processes of one scenario (``tests/hive/support.py``), all killed at its end."""

    def __init__(self, workdir: Path) -> None:
        self.factory = HiveFactory(workdir)
        self.workdir = workdir

    def config(self, hive_id: str, **overrides: Any) -> dict[str, Any]:
        return self.factory.config(hive_id, **overrides)

    def start(self, config: dict[str, Any]) -> HiveProcess:
        return self.factory.start(config)

    def stop(self, hive: HiveProcess) -> int:
        """SIGTERM, as systemd stops it; the exit status."""
        hive.signal(signal.SIGTERM)
        return hive.wait_exit(timeout=20)

    def cleanup(self) -> None:
        self.factory.cleanup()


@pytest.fixture
def hive_procs(tmp_path: Path) -> Iterator[Hives]:
    """Starts real hives (free ports, data folders under the scenario's tmp_path); kills them afterwards."""
    hives = Hives(tmp_path / "hives")
    hives.workdir.mkdir(parents=True, exist_ok=True)
    try:
        yield hives
    finally:
        hives.cleanup()


# --------------------------------------------------------------------------- queens


class QueenProcess:
    """``python -m rbee_runtime.queen --config <yaml>`` in its own session, with an HTTP client."""

    def __init__(self, workdir: Path, queen_id: str, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"queen_id": queen_id, "port": self.port, **settings}
        self.config_path = workdir / f"queen-{queen_id}-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.config_path.with_suffix(".log")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rbee_runtime.queen", "--config", str(self.config_path)],
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)
        wait_until(self._healthy, timeout=20, what=f"queen on port {self.port} (log {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"queen exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.http.close()


@pytest.fixture
def queen_procs(tmp_path: Path) -> Iterator[Callable[..., QueenProcess]]:
    """Starts real queens (``queen_procs("q1", stale_timeout_s=...)``); kills every one afterwards."""
    workdir = tmp_path / "queens"
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[QueenProcess] = []

    def start(queen_id: str = "queen", **settings: Any) -> QueenProcess:
        queen = QueenProcess(workdir, queen_id, **settings)
        started.append(queen)
        return queen

    try:
        yield start
    finally:
        for queen in started:
            queen.kill()


def wait_for(fn: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``fn`` until it returns something truthy (re-export of the hive tests' helper)."""
    return wait_until(fn, timeout=timeout, what=what)
