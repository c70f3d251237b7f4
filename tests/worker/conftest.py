"""Worker test fixtures: a real worker subprocess (always killed) and a real callback receiver."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).parents[2]


def get_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """A ``python -m rbee_runtime.worker`` subprocess on 127.0.0.1, its log in a file."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rbee_runtime.worker", *args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/health", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def wait_health(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
        """Poll ``/health`` until ``predicate`` holds; fail with the worker's log otherwise."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                last = self.health()
                if predicate(last):
                    return last
            time.sleep(0.02)
        pytest.fail(f"worker health never matched (last: {last}):\n{self.log()}")

    def wait_idle(self, timeout: float = 15) -> dict[str, Any]:
        return self.wait_health(lambda h: h["state"] == "idle" and h["slots_busy"] == 0, timeout)

    def wait_exit(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not exit within {timeout} s:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def running_worker(default_model: Path, log_dir: Path, **options: Any) -> Iterator[WorkerProcess]:
    """Start a worker (``options`` become ``--flags``) and kill it whatever happens."""
    port = options.pop("port", None) or get_free_port()
    flags = {
        "worker_id": "w-test",
        "model_id": "rbee-tiny",
        "model_path": str(default_model),
        "host": "127.0.0.1",
        "slots": 1,
        "ctx_size": 2048,
        "backend": "cpu",
        "threads": 1,
        **options,
    }
    args = [f"--port={port}"]
    for key, value in flags.items():
        if value is not None:
            args.append(f"--{key.replace('_', '-')}={value}")
    worker = WorkerProcess(args, port, log_dir / f"worker-{port}.log")
    try:
        yield worker
    finally:
        worker.kill()


@pytest.fixture
def start_worker(tiny_model_path: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``start_worker(slots=2, callback_url=...)``; every worker is killed at teardown."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> WorkerProcess:
            return stack.enter_context(running_worker(tiny_model_path, tmp_path, **options))

        yield start


class CallbackReceiver:
    """A tiny real HTTP server recording the JSON bodies POSTed to it (the hive's ready endpoint).

    ``port``: listen there (0: any free port). Each record has ``path``, ``body`` and ``at`` (monotonic).
    """

    def __init__(self, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()  # answer only once set (set by default)
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                receiver.received.append({"path": self.path, "body": body, "at": time.monotonic()})
                receiver.arrived.set()
                receiver.release.wait(10)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/workers/ready"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
