"""Scenario fixtures of the features: what steps hand each other, model files, recorded outputs, servers.

Processes come from the one test harness (``tests/support``): ``processes``, ``hives``, ``shared_cluster``,
``streams``, ``freezer`` are its fixtures; ``hive_procs`` and ``queen_procs`` here are thin wiring over it.
Also real: model files on disk, a local HTTP model server with Range support, the recorded ``nvidia-smi``
outputs of ``tests/fixtures/nvidia-smi/`` and the SSH + systemd test hosts (``test_hosts``, from
``tests/hosts/plugin.py``). Every process is killed at the end of its scenario, also when a step fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rbee.engine.detect import parse_nvidia_smi
from rbee_runtime import __version__
from rbee_runtime.common.contracts import GpuInfo, Heartbeat, WorkerInfo
from rbee_runtime.common.gpus import gpus_from_smi
from tests.models.server import ModelServer, model_server
from tests.support import wire
from tests.support.processes import ProcessPool
from tests.support.services import Hives, QueenProc, start_queen
from tests.support.waiting import wait_until

#: Names the preflight steps import from here.
QueenProcess = QueenProc
wait_for = wait_until

# The test hosts (fixture ``test_hosts``, marker ``hosts``): the same plugin tests/conftest.py loads,
# registered once per session however many conftests name it.
pytest_plugins = ["tests.hosts.plugin"]

REPO = Path(__file__).resolve().parents[2]
NVIDIA_SMI_FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
MIB = 1024 * 1024
GIB = 1024 * MIB


def parse_size(text: str) -> int:
    """``1234`` → 1234, ``3 MiB`` → 3145728, ``4 GiB``, ``1 PiB``, ``1.5 KiB`` (binary units)."""
    units = {"b": 1, "bytes": 1, "kib": 1024, "mib": MIB, "gib": GIB, "tib": 1024 * GIB, "pib": 1024**2 * GIB}
    number, _, unit = text.strip().partition(" ")
    return int(float(number) * units[unit.strip().lower() or "b"])


def gpus_from_nvidia_smi(text: str) -> list[GpuInfo]:
    """The GPUs of a recorded ``nvidia-smi`` CSV as the hive sees them (bytes), via the shared parser."""
    return gpus_from_smi(parse_nvidia_smi(text))


# --------------------------------------------------------------------------- wire objects


def worker(worker_id: str, state: str, model_id: str = "tinyllama-q4", hive_id: str = "gpu-box") -> WorkerInfo:
    """A worker as a hive reports it in its heartbeat."""
    return wire.worker_info(worker_id, model_id, state=state, hive_id=hive_id,
                            url=f"http://{hive_id}.invalid:7840/{worker_id}")  # fmt: skip


def heartbeat(hive_id: str, workers: list[WorkerInfo], version: str = __version__) -> Heartbeat:
    """The heartbeat a hive of ``version`` (default: this release) sends to the queen."""
    models = sorted({w.model_id for w in workers}) or ["tinyllama-q4"]
    return wire.heartbeat(hive_id, workers=workers, models=models, version=version, cpu_count=8, max_workers=4)


# --------------------------------------------------------------------------- scenario state and files


@pytest.fixture
def scene() -> SimpleNamespace:
    """Values the steps of one scenario hand to each other."""
    return SimpleNamespace()


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
    """A recorded ``nvidia-smi`` output of ``tests/fixtures/nvidia-smi/`` by file name."""

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


# --------------------------------------------------------------------------- hives and queens


@pytest.fixture
def hive_procs(hives: Hives) -> Hives:
    """Starts real hives (free ports, data folders under the scenario's tmp_path); kills them afterwards."""
    return hives


@pytest.fixture
def queen_procs(processes: ProcessPool) -> Callable[..., QueenProc]:
    """Starts real queens with their default timings (``queen_procs("q1", stale_timeout_s=...)``), healthy."""

    def start(queen_id: str = "queen", **settings: Any) -> QueenProc:
        queen = start_queen(processes, queen_id, fast=False, **settings)
        queen.wait_healthy(20)
        return queen

    return start
