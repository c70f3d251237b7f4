"""rbee services as real processes: queens, hives, workers, a queen + hive cluster, a whole ``rbee up``.

Each ``start_*`` runs ``python -m rbee_runtime.<service>`` (or ``rbee up``) through a
:class:`~tests.support.processes.ProcessPool`, which kills it and everything it started at the end.
``wait_healthy`` waits for ``GET /health`` and fails with the log tail when the process exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.credentials import read_credential, worker_credential, write_credential
from rbee_runtime.common.ports import free_port
from tests.prometheus import sample_value
from tests.support.processes import Proc, ProcessPool, descendants
from tests.support.waiting import wait_until
from tests.support.wire import heartbeat, worker_info

PY = sys.executable
RBEE = str(Path(sys.executable).parent / "rbee")

#: Timings of the clusters the tests start (seconds): short, so failures show fast.
HEARTBEAT_S = 0.25
STALE_S = 2.0
REQUEST_TIMEOUT_S = 2.0
FAST_QUEEN: dict[str, Any] = {
    "heartbeat_interval_s": HEARTBEAT_S, "stale_timeout_s": STALE_S, "request_timeout_s": REQUEST_TIMEOUT_S,
    "loading_timeout_s": 30, "queue_timeout_s": 20, "spawn_poll_interval_s": 0.1,
}  # fmt: skip
FAST_HIVE: dict[str, Any] = {
    "heartbeat_interval_s": 0.2, "health_check_interval_s": 0.2, "worker_idle_timeout_s": 0,
    "loading_timeout_s": 30, "shutdown_grace_s": 5, "restart_backoff_s": 0.3, "ram_reserve_bytes": 0,
    "ctx_size": 256, "worker_threads": 1, "log_level": "info",
}  # fmt: skip


def tiny_model_entry(model_path: Path, model_id: str = TINY_MODEL_ID) -> dict[str, str]:
    """A hive config's ``models`` entry for a local GGUF file."""
    return {"model_id": model_id, "reference": f"file:{model_path}", "local_path": str(model_path)}


# --------------------------------------------------------------------------- one service


class Service:
    """A started rbee service and an HTTP client for it."""

    def __init__(self, proc: Proc, url: str, token: str | None = None) -> None:
        self.proc = proc
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, timeout=15, trust_env=False, headers=headers)

    @property
    def name(self) -> str:
        return self.proc.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.alive()

    def log(self) -> str:
        return self.proc.log()

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, f"GET {self.url}{path}: {response.status_code} {response.text}"
        return response.json()

    def health(self) -> dict[str, Any]:
        return dict(self.get("/health"))

    def wait_health(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                    what: str = "") -> dict[str, Any]:  # fmt: skip
        """Poll ``/health`` until ``predicate`` holds; fail with the log tail when the process exits."""

        def check() -> dict[str, Any] | None:
            self.proc.check_alive()
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                body = self.health()
                return body if predicate(body) else None
            return None

        return wait_until(check, timeout, f"{self.name}: {what or '/health'}\n{self.proc.log_tail()}", 0.02)

    def wait_healthy(self, timeout: float = 30.0, state: str | None = None) -> dict[str, Any]:
        """Wait until ``/health`` answers 200 (with ``state`` when given)."""
        return self.wait_health(lambda h: state is None or h.get("state") == state, timeout,
                                f"/health{f' state {state}' if state else ''}")  # fmt: skip

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)


class QueenProc(Service):
    """A queen process."""

    def workers(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/workers")["workers"])

    def hives(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/hives")["hives"])

    def worker(self, worker_id: str) -> dict[str, Any] | None:
        return next((w for w in self.workers() if w["worker_id"] == worker_id), None)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when absent)."""
        return sample_value(self.http.get("/metrics").text, name, **labels)


class HiveProc(Service):
    """A hive process; :meth:`restart` runs a new process on the same config (same data_dir)."""

    def __init__(self, proc: Proc, pool: ProcessPool, config_path: Path, config: dict[str, Any]) -> None:
        super().__init__(proc, f"http://127.0.0.1:{config['port']}", hive_token(config))
        self.pool = pool
        self.config_path = config_path
        self.config = config

    @property
    def port(self) -> int:
        return int(self.config["port"])

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    def workers(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/workers")["workers"])

    def worker(self, worker_id: str) -> dict[str, Any] | None:
        return next((w for w in self.workers() if w["worker_id"] == worker_id), None)

    def wait_worker(self, worker_id: str, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 15.0) -> dict[str, Any]:  # fmt: skip
        def check() -> dict[str, Any] | None:
            w = self.worker(worker_id)
            return w if w is not None and pred(w) else None

        return wait_until(check, timeout, f"worker {worker_id} condition", 0.1)

    def wait_state(self, worker_id: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_worker(worker_id, lambda w: w["state"] == state, timeout)

    def spawn(self, model_id: str, **extra: Any) -> dict[str, Any]:
        resp = self.http.post("/v1/workers", json={"model_id": model_id, **extra})
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    def restart(self) -> None:
        self.proc = self.pool.start(self.proc.name, hive_command(self.config_path))
        self.wait_healthy()

    def worker_table(self) -> list[str]:
        """Worker ids in the hive's SQLite worker table (read-only connection)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.data_dir / 'catalog.db'}?mode=ro", uri=True)) as db:
            return [row[0] for row in db.execute("SELECT worker_id FROM workers ORDER BY worker_id")]


class WorkerProc(Service):
    """A worker process the test started itself (a hive's child workers are not started here)."""

    def __init__(self, proc: Proc, port: int, worker_id: str, slots: int) -> None:
        super().__init__(proc, f"http://127.0.0.1:{port}")
        self.port = port
        self.worker_id = worker_id
        self.slots = slots

    def wait_idle(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_health(lambda h: h["state"] == "idle" and h["slots_busy"] == 0, timeout, "idle")

    def kill(self) -> None:
        self.proc.kill()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the worker's ``/metrics`` (0 when absent)."""
        return sample_value(self.http.get("/metrics").text, name, **labels)


# --------------------------------------------------------------------------- starting them


def hive_token(config: dict[str, Any]) -> str | None:
    """The credential of a hive config's ``credential_file`` (None: the hive is open)."""
    path = config.get("credential_file")
    return read_credential(path, "credential_file") if path else None


def start_queen(pool: ProcessPool, name: str = "queen", *, fast: bool = True, env: dict[str, str] | None = None,
                api_key: str | None = None, **settings: Any) -> QueenProc:  # fmt: skip
    """A queen on a free port (``fast``: the short test timings of :data:`FAST_QUEEN`); does not wait.

    ``api_key``: what its :class:`QueenProc` client sends (the queen's keys come from ``settings``).
    """
    port = free_port()
    config = {"queen_id": name, "port": port, **(FAST_QUEEN if fast else {}), **settings}
    path = pool.workdir / f"{name}-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = pool.start(name, [PY, "-m", "rbee_runtime.queen", "--config", str(path)], env)
    return QueenProc(proc, f"http://127.0.0.1:{port}", api_key)


def hive_command(config_path: Path) -> list[str]:
    return [PY, "-m", "rbee_runtime.hive", "--config", str(config_path)]


def hive_config(workdir: Path, hive_id: str = "h1", *, model_path: Path | None = None, queen_url: str | None = None,
                **overrides: Any) -> dict[str, Any]:  # fmt: skip
    """A hive config on free ports with a data folder under ``workdir`` and the test timings (:data:`FAST_HIVE`).

    ``model_path``: the hive holds that GGUF as ``rbee-tiny``.
    """
    first = free_port()
    config: dict[str, Any] = {
        "hive_id": hive_id, "host": "127.0.0.1", "port": free_port(), "data_dir": str(workdir / f"data-{hive_id}"),
        "worker_port_first": first, "worker_port_last": min(first + 40, 65535), **FAST_HIVE,
    }  # fmt: skip
    if queen_url is not None:
        config["queen_url"] = queen_url
    if model_path is not None:
        config["models"] = [tiny_model_entry(model_path)]
    config.update(overrides)
    return config


def start_hive(pool: ProcessPool, config: dict[str, Any], wait: bool = False) -> HiveProc:
    """A hive on ``config`` (see :func:`hive_config`); ``wait``: until it answers ``/health``."""
    path = pool.workdir / f"hive-{config['hive_id']}-{config['port']}.yaml"
    path.write_text(yaml.safe_dump(config))
    hive = HiveProc(pool.start(str(config["hive_id"]), hive_command(path)), pool, path, config)
    if wait:
        hive.wait_healthy()
    return hive


class Hives:
    """Hive configs and processes of one test: ``hives.start(hives.config("h1", queen_url=...))``."""

    def __init__(self, pool: ProcessPool) -> None:
        self.pool = pool
        self.workdir = pool.workdir

    def config(self, hive_id: str = "h1", **overrides: Any) -> dict[str, Any]:
        return hive_config(self.workdir, hive_id, **overrides)

    def start(self, config: dict[str, Any], wait: bool = True) -> HiveProc:
        return start_hive(self.pool, config, wait)

    def stop(self, hive: HiveProc) -> int:
        """SIGTERM, as systemd stops it; the exit status."""
        hive.signal(signal.SIGTERM)
        return hive.wait_exit(timeout=20)

    def leftovers(self) -> list[psutil.Process]:
        """Processes the hives started (their workers) that still run."""
        return self.pool.leftovers()


def start_worker(pool: ProcessPool, worker_id: str, model_path: Path | str, *, port: int | None = None,
                 model_id: str = TINY_MODEL_ID, slots: int = 1, ctx_size: int = 1024,
                 **options: Any) -> WorkerProc:  # fmt: skip
    """A worker on the tiny model started by the test itself; ``options`` become ``--flags`` (None: left out).

    E.g. ``callback_url=...``, ``managed_by="external"``, ``announce_interval=0.5``, ``grace_period=20``.
    """
    port = port or free_port()
    flags = {"worker_id": worker_id, "model_id": model_id, "model_path": str(model_path), "host": "127.0.0.1",
             "port": port, "slots": slots, "ctx_size": ctx_size, "backend": "cpu", "threads": 1, **options}  # fmt: skip
    args = [f"--{key.replace('_', '-')}={value}" for key, value in flags.items() if value is not None]
    proc = pool.start(worker_id, [PY, "-m", "rbee_runtime.worker", *args])
    return WorkerProc(proc, port, worker_id, slots)


def worker_health(worker: dict[str, Any] | str, token: str | None = None) -> dict[str, Any]:
    """``GET /health`` of a worker (a ``WorkerInfo`` dict or its URL; ``token``: the workers' credential)."""
    url = worker if isinstance(worker, str) else worker["url"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/health", timeout=5, trust_env=False, headers=headers)
    response.raise_for_status()
    return dict(response.json())


def worker_metric(worker: dict[str, Any] | str, name: str, **labels: str) -> float:
    """One sample of a worker's ``/metrics`` (a ``WorkerInfo`` dict or its URL; 0 when absent)."""
    url = worker if isinstance(worker, str) else worker["url"]
    return sample_value(httpx.get(f"{url}/metrics", timeout=5, trust_env=False).text, name, **labels)


def register_workers(queen: QueenProc, workers: list[WorkerProc], hive_id: str = "test-hive",
                     models: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Tell the queen about worker processes by POSTing the heartbeat a hive would send."""
    infos = [worker_info(w.worker_id, TINY_MODEL_ID, url=w.url, slots=w.slots, hive_id=hive_id, pid=w.pid)
             for w in workers]  # fmt: skip
    beat = heartbeat(hive_id, models=models, workers=infos, url="http://127.0.0.1:9")
    response = queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"))
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- a queen and a hive


@dataclass
class Cluster:
    """A queen and one hive reporting to it."""

    pool: ProcessPool
    queen: QueenProc
    hive: HiveProc
    model_path: Path
    workers_started: list[WorkerProc] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{self.queen.url}/v1"

    @property
    def worker_token(self) -> str | None:
        """The credential of the hive's workers (None: the hive runs open)."""
        token = hive_token(self.hive.config)
        return worker_credential(token) if token else None

    def serving(self, model_id: str = TINY_MODEL_ID) -> list[dict[str, Any]]:
        """The queen's routable workers of ``model_id``."""
        return [w for w in self.queen.workers() if w["model_id"] == model_id and w["routable"]]

    def wait_serving(self, count: int, model_id: str = TINY_MODEL_ID, timeout: float = 40.0) -> list[dict[str, Any]]:
        """Wait until ``count`` workers of the model are routable, idle and hold no request."""

        def ready() -> list[dict[str, Any]] | None:
            self.queen.proc.check_alive()
            self.hive.proc.check_alive()
            workers = [w for w in self.serving(model_id) if w["in_flight"] == 0]
            if len(workers) != count:
                return None
            for w in workers:
                try:
                    health = worker_health(w, self.worker_token)
                except httpx.HTTPError:
                    return None
                if health["state"] != "idle" or health["slots_busy"]:
                    return None
            return workers

        return wait_until(ready, timeout, f"{count} idle routable worker(s) of {model_id} at the queen", 0.1)

    def only_worker(self, model_id: str = TINY_MODEL_ID) -> dict[str, Any]:
        workers = [w for w in self.queen.workers() if w["model_id"] == model_id and w["state"] != "stopped"]
        assert len(workers) == 1, workers
        return workers[0]


def start_cluster(pool: ProcessPool, model_path: Path, *, workers: int = 1, slots: int = 1,
                  queen: dict[str, Any] | None = None, hive: dict[str, Any] | None = None,
                  external: tuple[str, ...] = (), api_key: str | None = None) -> Cluster:  # fmt: skip
    """A queen and a hive keeping ``workers`` placed workers of ``rbee-tiny``; returns once they serve.

    ``external``: ids of workers started beside the hive (``--managed-by external``, announcing to it).
    Everything starts at once; the hive and the workers find their peers by retrying.
    """
    queen_proc = start_queen(pool, api_key=api_key, **(queen or {}))
    settings: dict[str, Any] = {
        "heartbeat_interval_s": HEARTBEAT_S, "ctx_size": 1024,
        "placements": [{"model_id": TINY_MODEL_ID, "replicas": workers, "slots": slots}] if workers else [],
        **(hive or {}),
    }  # fmt: skip
    hive_proc = start_hive(pool, hive_config(pool.workdir, "hive", model_path=model_path, queen_url=queen_proc.url,
                                             **settings))  # fmt: skip
    cluster = Cluster(pool, queen_proc, hive_proc, model_path)
    callback = f"{hive_proc.url}/v1/workers/ready"
    credential_file = None
    if external and cluster.worker_token:  # the hive's workers' credential, as a deploy puts it beside the units
        credential_file = pool.workdir / "worker.credential"
        write_credential(credential_file, cluster.worker_token)
    cluster.workers_started = [
        start_worker(pool, worker_id, model_path, callback_url=callback, managed_by="external",
                     announce_interval=0.5, grace_period=20, credential_file=credential_file)
        for worker_id in external
    ]  # fmt: skip
    queen_proc.wait_healthy()
    hive_proc.wait_healthy()
    if workers or external:
        cluster.wait_serving(workers + len(external))
    return cluster


# --------------------------------------------------------------------------- rbee up


def local_spec(folder: Path, model_path: Path, model_id: str = "tiny", *, slots: int = 2, context: int = 512,
               max_workers: int = 3, api_keys_env: str | None = None, heartbeat: str = "500ms", stale: str = "3s",
               loading: str = "60s") -> Path:  # fmt: skip
    """A spec of one local host (``localhost``) placing one worker of ``model_path``, on free ports."""
    keys = f"\n  api_keys: {{env: {api_keys_env}}}" if api_keys_env else ""
    spec = folder / "cluster.yaml"
    spec.write_text(
        f"""\
cluster: local-test
queen:
  port: {free_port()}{keys}
hosts:
  - name: here
    address: localhost
    backend: cpu
    hive: {{port: {free_port()}, max_workers: {max_workers}}}
models:
  - id: {model_id}
    source: file://{model_path}
    context: {context}
placements:
  - model: {model_id}
    slots: {slots}
runtime:
  heartbeat_interval: {heartbeat}
  stale_timeout: {stale}
  loading_timeout: {loading}
"""
    )
    return spec


READY_MARKER = "ready: OpenAI-compatible API at "


@dataclass
class LocalCluster:
    """A ``rbee up`` process and where to reach its queen."""

    proc: Proc
    queen_url: str
    run_dir: Path
    started: list[psutil.Process]
    #: The key clients use (``RBEE_API_KEY`` in :meth:`env`), when the spec asks for one.
    api_key: str | None = None

    def stop(self, timeout: float = 45.0) -> int:
        """Ctrl+C, as a user does; the exit status."""
        if self.proc.alive():
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def worker_headers(self, hive_id: str) -> dict[str, str]:
        """The ``Authorization`` header the workers of local hive ``hive_id`` take (their hive keeps it)."""
        token = read_credential(self.run_dir / "hives" / hive_id / "credentials" / "worker.credential", "worker")
        return {"Authorization": f"Bearer {token}"}

    def env(self) -> dict[str, str]:
        """Environment for ``rbee`` commands talking to this cluster."""
        key = {"RBEE_API_KEY": self.api_key} if self.api_key else {}
        return {**os.environ, "RBEE_QUEEN_URL": self.queen_url, **key}


def start_rbee_up(pool: ProcessPool, spec: Path, *, env: dict[str, str] | None = None,
                  timeout: float = 90.0) -> LocalCluster:  # fmt: skip
    """``rbee up --spec`` as a real process; returns once it says the cluster is ready."""
    run_dir = pool.workdir / "run"
    proc = pool.start("rbee-up", [RBEE, "up", "--spec", str(spec), "--run-dir", str(run_dir),
                                  "--ready-timeout", str(int(timeout - 10))], env)  # fmt: skip

    def ready() -> str | None:
        proc.check_alive()
        text = proc.log()
        return text.split(READY_MARKER)[1].split("/v1")[0] if READY_MARKER in text else None

    url = wait_until(ready, timeout, "rbee up to report the cluster ready", 0.2)
    return LocalCluster(proc, url, run_dir, descendants(proc.pid))
