"""A whole local cluster started the way a user does: ``rbee up --spec FILE`` as a real process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import get_free_port

RBEE = str(Path(sys.executable).parent / "rbee")
API_KEY = "sk-e2e-test-key"


@dataclass
class RunningCluster:
    """A ``rbee up`` process and where to reach its queen."""

    process: subprocess.Popen[str]
    queen_url: str
    run_dir: Path
    output: Path
    descendants: list[psutil.Process]

    def env(self) -> dict[str, str]:
        """Environment for ``rbee`` commands talking to this cluster."""
        return {**os.environ, "RBEE_QUEEN_URL": self.queen_url, "RBEE_API_KEY": API_KEY}


def write_spec(folder: Path, model: Path, queen_port: int, hive_port: int) -> Path:
    spec = folder / "cluster.yaml"
    spec.write_text(
        f"""\
cluster: e2e
queen:
  port: {queen_port}
  api_keys: {{env: RBEE_E2E_KEYS}}
hosts:
  - name: here
    address: localhost
    backend: cpu
    hive: {{port: {hive_port}, max_workers: 3}}
models:
  - id: tiny
    source: file://{model}
    context: 512
placements:
  - model: tiny
    slots: 2
runtime:
  heartbeat_interval: 500ms
  stale_timeout: 3s
  loading_timeout: 60s
"""
    )
    return spec


def start_rbee_up(spec: Path, run_dir: Path, timeout_s: float = 90.0) -> RunningCluster:
    output = run_dir / "rbee-up.out"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RBEE_E2E_KEYS": API_KEY}
    with output.open("w") as sink:
        process = subprocess.Popen(
            [RBEE, "up", "--spec", str(spec), "--run-dir", str(run_dir), "--ready-timeout", "80"],
            stdout=sink, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    seen: list[psutil.Process] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):
            seen = psutil.Process(process.pid).children(recursive=True) or seen
        text = output.read_text()
        if "ready: OpenAI-compatible API at " in text:
            url = text.split("ready: OpenAI-compatible API at ")[1].split("/v1")[0]
            descendants = psutil.Process(process.pid).children(recursive=True)
            return RunningCluster(process, url, run_dir, output, descendants)
        if process.poll() is not None:
            _kill(seen)
            raise AssertionError(f"rbee up exited with {process.returncode}:\n{text}")
        time.sleep(0.2)
    process.kill()
    _kill(seen)
    raise AssertionError(f"rbee up was not ready in {timeout_s}s:\n{output.read_text()}")


def _kill(processes: list[psutil.Process]) -> None:
    for leftover in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()


def stop_rbee_up(cluster: RunningCluster) -> int:
    """Ctrl+C, as a user does; returns the exit status (kills everything if it hangs)."""
    if cluster.process.poll() is None:
        cluster.process.send_signal(signal.SIGINT)
        try:
            cluster.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            cluster.process.kill()
    for leftover in cluster.descendants:
        if leftover.is_running() and leftover.status() != psutil.STATUS_ZOMBIE:
            leftover.kill()
    return int(cluster.process.wait())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[RunningCluster]:
    """One local cluster for the module: queen + hive + a placed worker (2 slots) on the tiny model."""
    folder = tmp_path_factory.mktemp("rbee-up")
    spec = write_spec(folder, tiny_model_path, get_free_port(), get_free_port())
    running = start_rbee_up(spec, folder / "run")
    try:
        yield running
    finally:
        stop_rbee_up(running)
