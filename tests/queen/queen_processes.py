"""Real service processes for the queen's end-to-end tests (workers, hives, queens), always killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from queen_helpers import heartbeat, worker_info

from rbee.tiny_model import TINY_MODEL_ID
from tests.prometheus import sample_value

PY = sys.executable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One started process and where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/health", timeout=5, trust_env=False)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def descendants(pid: int) -> list[psutil.Process]:
    """Every process ``pid`` started, recursively (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


class Processes:
    """Starts processes (each in its own session) and stops every one of them in :meth:`close`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(self, name: str, args: list[str], url: str, env: dict[str, str] | None = None) -> Service:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        service = Service(name, proc, url, log_path)
        self.services.append(service)
        return service

    def wait_healthy(self, service: Service, timeout: float = 30.0, state: str | None = None) -> None:
        """Wait for GET /health (and ``state`` in it); fail with the log when the process exits."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise AssertionError(f"{service.name} exited ({service.proc.returncode}):\n{service.log_tail()}")
            try:
                body = service.health()
                if state is None or body.get("state") == state:
                    return
                last = json.dumps(body)
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"{service.name} not ready after {timeout} s ({last}):\n{service.log_tail()}")

    def close(self) -> None:
        """SIGTERM everything (newest first), then SIGKILL the process groups that did not exit."""
        started = [child for service in self.services for child in descendants(service.proc.pid)]
        for service in reversed(self.services):
            if service.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    service.proc.send_signal(signal.SIGCONT)
                    service.proc.terminate()
        for service in reversed(self.services):
            try:
                service.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait(timeout=5)
            # Children of the process (workers of a hive) live in its session: make sure they are gone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.proc.pid, signal.SIGKILL)
        # A hive starts each worker in a session of its own: kill what is left of them too.
        for child in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    # ------------------------------------------------------------------ services

    def worker(self, worker_id: str, model_path: Path, slots: int = 1, ctx_size: int = 4096) -> Service:
        port = free_port()
        args = [PY, "-m", "rbee_runtime.worker", "--worker-id", worker_id, "--model-id", TINY_MODEL_ID,
                "--model-path", str(model_path), "--host", "127.0.0.1", "--port", str(port),
                "--slots", str(slots), "--ctx-size", str(ctx_size), "--backend", "cpu", "--device", "0",
                "--threads", "1"]
        service = self.start(worker_id, args, f"http://127.0.0.1:{port}")
        service.extra["slots"] = slots
        return service

    def queen(self, name: str, env: dict[str, str] | None = None, **settings: Any) -> Service:
        port = free_port()
        config = {"queen_id": name, "port": port, **settings}
        path = self.log_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return self.start(name, [PY, "-m", "rbee_runtime.queen", "--config", str(path)],
                          f"http://127.0.0.1:{port}", env)

    def hive(self, name: str, queen_url: str, model_path: Path, **settings: Any) -> Service:
        port = free_port()
        first = free_port()
        config = {
            "hive_id": name, "port": port, "queen_url": queen_url, "data_dir": str(self.log_dir / f"{name}-data"),
            "worker_port_first": first, "worker_port_last": first + 20, "ctx_size": 1024,
            "models": [{"model_id": TINY_MODEL_ID, "reference": f"file:{model_path}", "local_path": str(model_path)}],
            **settings,
        }
        path = self.log_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return self.start(name, [PY, "-m", "rbee_runtime.hive", "--config", str(path)],
                          f"http://127.0.0.1:{port}")


def register_workers(queen: Service, workers: list[Service], hive_id: str = "test-hive",
                     models: tuple[str, ...] = ()) -> None:
    """Tell the queen about real worker processes by POSTing the heartbeat a hive would send."""
    infos = [
        worker_info(w.name, TINY_MODEL_ID, url=w.url, slots=int(w.extra["slots"]), hive_id=hive_id, pid=w.proc.pid)
        for w in workers
    ]
    beat = heartbeat(hive_id, models=models, workers=infos, url="http://127.0.0.1:9")
    response = httpx.post(f"{queen.url}/v1/hives/heartbeat", json=beat.model_dump(mode="json"), timeout=5,
                          trust_env=False)
    assert response.status_code == 200, response.text


def metric(queen: Service, name: str, **labels: str) -> float:
    """One sample of the queen's /metrics (0 when absent)."""
    return sample_value(httpx.get(f"{queen.url}/metrics", timeout=5, trust_env=False).text, name, **labels)
