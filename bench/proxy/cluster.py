"""The processes under test: a local cluster (queen, hive, a llama.cpp worker on the tiny model) and a
canned-token worker announcing itself to the same hive, so the queen routes to both."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.proxy.processes import Child
from rbee.local.plan import default_spec, plan_local
from rbee.local.runner import LocalCluster
from rbee.tiny_model import TINY_MODEL_ID, ensure_tiny_model
from rbee_runtime.common.credentials import read_credential, worker_credential, write_credential
from rbee_runtime.common.ports import free_port

#: The model id the canned worker announces (not in any catalog: only that worker serves it).
CANNED_MODEL_ID = "rbee-canned"


class ClusterNotReadyError(Exception):
    """A service under test did not come up; the message says which and why."""


class BenchCluster:
    """``with BenchCluster(workdir, canned_slots) as c:`` a ready cluster; everything it started stops on exit."""

    def __init__(
        self, workdir: Path, canned_slots: int, ready_timeout_s: float = 120.0, canned_interval_us: float = 0.0
    ) -> None:
        self.workdir = workdir
        self.canned_slots = canned_slots
        self.canned_interval_us = canned_interval_us
        self.ready_timeout_s = ready_timeout_s
        self._stack = ExitStack()
        self.canned: Child | None = None

    def __enter__(self) -> BenchCluster:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        spec = default_spec(ensure_tiny_model(), free_port(), free_port())
        plan = plan_local(spec, Path.cwd(), self.workdir / "run")
        self.cluster = LocalCluster(plan, self.workdir / "logs")
        self._stack.callback(self.cluster.stop)
        self.cluster.start()
        self.cluster.wait_ready(self.ready_timeout_s)
        assert plan.queen_url is not None
        self.queen_url = plan.queen_url
        hive = next(s for s in plan.services if s.kind == "hive")
        self.hive_url = hive.url
        self.worker_token = _worker_token(hive.config)
        self.http = self._stack.enter_context(httpx.Client(timeout=10, trust_env=False))
        self.worker_url = self.wait_worker(TINY_MODEL_ID, lambda: None)
        self.canned_url = self._start_canned()

    @property
    def worker_headers(self) -> dict[str, str]:
        """What the workers of the local hive require (their internal credential)."""
        return {"Authorization": f"Bearer {self.worker_token}"} if self.worker_token else {}

    @property
    def queen_pid(self) -> int:
        pid = next(p.pid for p in self.cluster.processes if p.service.kind == "queen")
        assert pid is not None
        return pid

    def workers(self) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.queen_url}/v1/workers")
        response.raise_for_status()
        return list(response.json()["workers"])

    def wait_worker(self, model_id: str, check_alive: Callable[[], None]) -> str:
        """The URL of a routable worker of ``model_id`` once the queen lists one."""
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            check_alive()
            for w in self.workers():
                if w["model_id"] == model_id and w.get("routable"):
                    return str(w["url"])
            time.sleep(0.1)
        within = f"within {self.ready_timeout_s:g} s"
        raise ClusterNotReadyError(f"the queen listed no routable worker of {model_id} {within}")

    def _start_canned(self) -> str:
        """Start the canned worker (managed by nobody: it announces itself to the hive) and wait for the queen."""
        flags = {
            "worker-id": "bench-canned", "model-id": CANNED_MODEL_ID, "model-path": "/dev/null",
            "host": "127.0.0.1", "port": free_port(), "slots": self.canned_slots,
            "callback-url": f"{self.hive_url}/v1/workers/ready", "managed-by": "external",
            "announce-interval": 1, "log-level": "warning", "token-interval-us": self.canned_interval_us,
        }  # fmt: skip
        if self.worker_token:
            credential = self.workdir / "canned-worker.credential"
            write_credential(credential, self.worker_token)
            flags["credential-file"] = str(credential)
        command = [sys.executable, "-m", "bench.proxy.canned_worker", *(f"--{k}={v}" for k, v in flags.items())]
        self.canned = Child("canned worker", command, self.workdir / "logs" / "canned-worker.log")
        self._stack.callback(self.canned.stop)
        return self.wait_worker(CANNED_MODEL_ID, self.canned.check_alive)


def _worker_token(hive_config: Path) -> str | None:
    """The workers' credential of the hive with this config (None: the hive runs open)."""
    path = yaml.safe_load(hive_config.read_text()).get("credential_file")
    return worker_credential(read_credential(path, "credential_file")) if path else None
