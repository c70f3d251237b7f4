"""Helpers for the hive tests: a real hive process, a stand-in queen that records heartbeats."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import yaml

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TAG_ENV = "RBEE_HIVE_TEST_TAG"

HAS_ENGINE = importlib.util.find_spec("llama_cpp") is not None
#: Tests that run the real ``rbee_runtime.worker`` (llama.cpp on the tiny model).
ENGINE = [
    pytest.mark.engine,
    pytest.mark.skipif(
        not HAS_ENGINE,
        reason="llama_cpp (llama-cpp-python) is not installed: these tests run the real rbee_runtime.worker; "
        "install it with `pip install -e .[engine]`",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(fn: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or fn}; last value: {last!r}")


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Processes started by a test hive (they inherit its tag in their environment)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "rbee_runtime" not in " ".join(proc.info["cmdline"] or []):
                continue
            if proc.environ().get(TAG_ENV) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class HiveProcess:
    """``python -m rbee_runtime.hive --config <yaml>`` as a subprocess, with an HTTP client."""

    def __init__(self, config: dict[str, Any], workdir: Path, tag: str) -> None:
        self.config = config
        self.port = int(config["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"hive-{config['hive_id']}-{uuid.uuid4().hex[:6]}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.config_path.with_suffix(".log")
        self.tag = tag
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=15.0, trust_env=False)

    def start(self, wait: bool = True) -> HiveProcess:
        env = {**os.environ, TAG_ENV: self.tag, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rbee_runtime.hive", "--config", str(self.config_path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            wait_until(self._healthy, timeout=20, what=f"hive on port {self.port} (log {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hive exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def workers(self) -> list[dict[str, Any]]:
        resp = self.http.get("/v1/workers")
        resp.raise_for_status()
        return list(resp.json()["workers"])

    def worker(self, worker_id: str) -> dict[str, Any] | None:
        return next((w for w in self.workers() if w["worker_id"] == worker_id), None)

    def wait_worker(
        self, worker_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            w = self.worker(worker_id)
            return w if w is not None and pred(w) else None

        return wait_until(check, timeout=timeout, interval=0.1, what=f"worker {worker_id} condition")

    def wait_state(self, worker_id: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_worker(worker_id, lambda w: w["state"] == state, timeout)

    def spawn(self, model_id: str, **extra: Any) -> dict[str, Any]:
        resp = self.http.post("/v1/workers", json={"model_id": model_id, **extra})
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL the hive and everything it (or an earlier hive with the same tag) started."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
            self.proc.kill()
            self.proc.wait(timeout=10)
        for proc in tagged_processes(self.tag):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == proc.pid:  # a worker: its own process group
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
        self.http.close()


class HiveFactory:
    """Builds hive configs with free ports and runs hives; ``cleanup()`` leaves no process behind."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tag = uuid.uuid4().hex
        self.hives: list[HiveProcess] = []

    def config(self, hive_id: str = "h1", **overrides: Any) -> dict[str, Any]:
        first = free_port()
        cfg: dict[str, Any] = {
            "hive_id": hive_id,
            "host": "127.0.0.1",
            "port": free_port(),
            "data_dir": str(self.workdir / f"data-{hive_id}"),
            "worker_port_first": first,
            "worker_port_last": min(first + 40, 65535),
            "heartbeat_interval_s": 0.2,
            "health_check_interval_s": 0.2,
            "worker_idle_timeout_s": 0,
            "loading_timeout_s": 30,
            "shutdown_grace_s": 5,
            "restart_backoff_s": 0.3,
            "ram_reserve_bytes": 0,
            "ctx_size": 256,
            "worker_threads": 1,
            "log_level": "info",
        }
        cfg.update(overrides)
        return cfg

    def start(self, config: dict[str, Any], wait: bool = True) -> HiveProcess:
        hive = HiveProcess(config, self.workdir, self.tag)
        self.hives.append(hive)
        return hive.start(wait=wait)

    def leftovers(self) -> list[psutil.Process]:
        return tagged_processes(self.tag)

    def cleanup(self) -> None:
        for hive in self.hives:
            hive.kill_all()


class QueenStub:
    """A tiny real HTTP server standing in for the queen: records every heartbeat it receives."""

    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path == "/v1/hives/heartbeat":
                    with stub._lock:
                        stub.beats.append(json.loads(body))
                        stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                    code = 200
                else:
                    code = 404
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.beats)

    def find(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((b for b in reversed(self.snapshot()) if pred(b)), None)

    def worker_states(self, worker_id: str) -> list[str]:
        """States of ``worker_id`` in the order the heartbeats reported them (consecutive duplicates merged)."""
        states: list[str] = []
        for beat in self.snapshot():
            for w in beat["workers"]:
                if w["worker_id"] == worker_id and (not states or states[-1] != w["state"]):
                    states.append(w["state"])
        return states

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ExternalWorker:
    """A worker started by the test itself, as systemd would (``--managed-by external``): no hive's child.

    It runs in its own session without the hive test tag, so ``HiveFactory.leftovers`` does not see it;
    ``kill()`` (the ``external_workers`` fixture calls it) SIGKILLs its process group.
    """

    def __init__(
        self,
        worker_id: str,
        model_path: Path,
        callback_url: str,
        workdir: Path,
        port: int | None = None,
        announce_interval: float = 0.5,
        model_id: str = "rbee-tiny",
    ) -> None:
        self.worker_id = worker_id
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"external-{worker_id}-{uuid.uuid4().hex[:6]}.log"
        cmd = [
            sys.executable, "-m", "rbee_runtime.worker",
            "--worker-id", worker_id,
            "--model-id", model_id,
            "--model-path", str(model_path),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--ctx-size", "256",
            "--threads", "1",
            "--callback-url", callback_url,
            "--managed-by", "external",
            "--announce-interval", str(announce_interval),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != TAG_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class ExternalWorkers:
    """Factory of ``ExternalWorker``s; ``cleanup()`` kills every one it started."""

    def __init__(self, workdir: Path, model_path: Path) -> None:
        self.workdir = workdir
        self.model_path = model_path
        self.started: list[ExternalWorker] = []

    def start(self, worker_id: str, callback_url: str, **options: Any) -> ExternalWorker:
        worker = ExternalWorker(worker_id, self.model_path, callback_url, self.workdir, **options)
        self.started.append(worker)
        return worker

    def cleanup(self) -> None:
        for worker in self.started:
            worker.kill()
