"""Real rbee processes for the scenarios: queens, hives and workers on the tiny model, always killed.

Every process a scenario starts runs in its own session with ``RBEE_FEATURE_TAG=<uuid>`` in its
environment, which the workers a hive (or ``rbee up``) starts inherit. :meth:`ProcessPool.close`
collects the descendants of everything it started *before* stopping anything, then kills them
all, plus every process that still carries the tag (workers of a hive that was killed and
restarted are nobody's children any more). It runs at the end of each scenario, failed or not.

Fixtures:

- ``tiny_model_file``: the tiny GGUF (written once into ``~/.cache/rbee/models``).
- ``processes``: a :class:`ProcessPool` for one scenario.
- ``shared_cluster``: one queen + one hive keeping a 2-slot worker of ``rbee-tiny``, started once for
  the session, for scenarios that leave it as they found it (:meth:`Cluster.wait_serving` waits for that).
- ``streams``: opens streamed requests (:class:`Stream`) and disconnects the open ones afterwards.
- ``freezer``: SIGSTOPs processes and SIGCONTs them again at the end of the scenario.
- ``scene``: a blank object the steps of one scenario share values through.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import yaml

from rbee.tiny_model import TINY_MODEL_ID, ensure_tiny_model
from rbee_runtime.common.ports import free_port
from tests.prometheus import sample_value

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RBEE = str(Path(sys.executable).parent / "rbee")
TAG_ENV = "RBEE_FEATURE_TAG"
MODEL_CACHE = Path("~/.cache/rbee/models").expanduser()

#: Timings of every cluster the scenarios start (seconds): short, so failures show fast.
HEARTBEAT_S = 0.25
STALE_S = 2.0
REQUEST_TIMEOUT_S = 2.0


# --------------------------------------------------------------------------- waiting


def wait_until(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout:g} s still waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def gone(proc: psutil.Process) -> bool:
    """True when the process has exited (a zombie counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One process a scenario started, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        """The exit status, waiting up to ``timeout`` seconds (fails with the log tail otherwise)."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {timeout:g} s:\n{self.log()[-3000:]}") from None


class ProcessPool:
    """Starts processes for one scenario (or the session) and kills every one of them in :meth:`close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tag = uuid.uuid4().hex
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str]) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        env = {**os.environ, TAG_ENV: self.tag, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def tagged(self) -> list[psutil.Process]:
        """Live processes carrying this pool's tag: everything it started, and what those started."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(TAG_ENV) == self.tag and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def close(self) -> None:
        """Kill everything this pool started and everything those processes started (frozen ones too)."""
        family: dict[int, psutil.Process] = {}
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    family[child.pid] = child
        for tagged in self.tagged():
            family.setdefault(tagged.pid, tagged)
        for proc in self.procs:  # each started its own session: its group is its pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for leftover in family.values():
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)
        deadline = time.monotonic() + 5  # orphans are reaped by init: a zombie counts as gone
        while not all(gone(p) for p in family.values()) and time.monotonic() < deadline:
            time.sleep(0.02)


# --------------------------------------------------------------------------- services


class Freezer:
    """SIGSTOPs processes for one scenario and always SIGCONTs them again (:meth:`close`)."""

    def __init__(self) -> None:
        self.frozen: set[int] = set()

    def freeze(self, pid: int) -> None:
        self.frozen.add(pid)
        os.kill(pid, signal.SIGSTOP)

    def thaw(self, pid: int) -> None:
        self.frozen.discard(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        for pid in list(self.frozen):
            self.thaw(pid)


class Service:
    """A started rbee service and an HTTP client for it."""

    def __init__(self, proc: Proc, url: str) -> None:
        self.proc = proc
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10, trust_env=False)

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, f"GET {self.url}{path}: {response.status_code} {response.text}"
        return response.json()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if not self.proc.alive():
                raise AssertionError(f"{self.proc.name} exited ({self.proc.popen.returncode}):\n{self.proc.log()}")
            with contextlib.suppress(httpx.HTTPError):
                return self.http.get("/health").status_code == 200
            return False

        wait_until(healthy, timeout, f"{self.proc.name} to answer /health")


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

    def __init__(self, proc: Proc, url: str, pool: ProcessPool, config_path: Path, config: dict[str, Any]) -> None:
        super().__init__(proc, url)
        self.pool = pool
        self.config_path = config_path
        self.config = config

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    def workers(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/workers")["workers"])

    def restart(self) -> None:
        self.proc = self.pool.start(self.proc.name, hive_command(self.config_path))
        self.wait_healthy()

    def worker_table(self) -> list[str]:
        """Worker ids in the hive's SQLite worker table (read-only connection)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.data_dir / 'catalog.db'}?mode=ro", uri=True)) as db:
            return [row[0] for row in db.execute("SELECT worker_id FROM workers ORDER BY worker_id")]


class WorkerProc(Service):
    """A worker process started by the scenario itself (as systemd would: ``--managed-by external``)."""

    def __init__(self, proc: Proc, url: str, worker_id: str) -> None:
        super().__init__(proc, url)
        self.worker_id = worker_id

    def health(self) -> dict[str, Any]:
        return dict(self.get("/health"))


def hive_command(config_path: Path) -> list[str]:
    return [PY, "-m", "rbee_runtime.hive", "--config", str(config_path)]


def start_queen(pool: ProcessPool, name: str = "queen", **settings: Any) -> QueenProc:
    port = free_port()
    config = {
        "queen_id": name, "port": port, "heartbeat_interval_s": HEARTBEAT_S, "stale_timeout_s": STALE_S,
        "request_timeout_s": REQUEST_TIMEOUT_S, "loading_timeout_s": 30, "queue_timeout_s": 20,
        "spawn_poll_interval_s": 0.1, **settings,
    }  # fmt: skip
    path = pool.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = pool.start(name, [PY, "-m", "rbee_runtime.queen", "--config", str(path)])
    return QueenProc(proc, f"http://127.0.0.1:{port}")


def start_hive(
    pool: ProcessPool, model_path: Path, queen_url: str | None, name: str = "hive", **settings: Any
) -> HiveProc:
    first = free_port()
    config: dict[str, Any] = {
        "hive_id": name, "port": free_port(), "queen_url": queen_url, "data_dir": str(pool.workdir / f"{name}-data"),
        "worker_port_first": first, "worker_port_last": min(first + 40, 65535), "ctx_size": 1024,
        "worker_threads": 1, "heartbeat_interval_s": HEARTBEAT_S, "health_check_interval_s": 0.2,
        "worker_idle_timeout_s": 0, "loading_timeout_s": 30, "restart_backoff_s": 0.3, "shutdown_grace_s": 5,
        "ram_reserve_bytes": 0,
        "models": [{"model_id": TINY_MODEL_ID, "reference": f"file:{model_path}", "local_path": str(model_path)}],
        **settings,
    }  # fmt: skip
    path = pool.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = pool.start(name, hive_command(path))
    return HiveProc(proc, f"http://127.0.0.1:{config['port']}", pool, path, config)


def start_worker(
    pool: ProcessPool,
    worker_id: str,
    model_path: Path,
    *,
    callback_url: str | None = None,
    model_id: str = TINY_MODEL_ID,
    slots: int = 1,
    ctx_size: int = 1024,
    announce_interval_s: float = 0.5,
) -> WorkerProc:
    """A worker the scenario starts itself (``--managed-by external``, announcing to ``callback_url``)."""
    port = free_port()
    args = [
        PY, "-m", "rbee_runtime.worker", "--worker-id", worker_id, "--model-id", model_id,
        "--model-path", str(model_path), "--host", "127.0.0.1", "--port", str(port), "--slots", str(slots),
        "--ctx-size", str(ctx_size), "--threads", "1", "--managed-by", "external",
        "--announce-interval", str(announce_interval_s), "--grace-period", "20",
    ]  # fmt: skip
    if callback_url:
        args += ["--callback-url", callback_url]
    return WorkerProc(pool.start(worker_id, args), f"http://127.0.0.1:{port}", worker_id)


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

    def serving(self, model_id: str = TINY_MODEL_ID) -> list[dict[str, Any]]:
        """The queen's routable workers of ``model_id``."""
        return [w for w in self.queen.workers() if w["model_id"] == model_id and w["routable"]]

    def wait_serving(self, count: int, model_id: str = TINY_MODEL_ID, timeout: float = 40.0) -> list[dict[str, Any]]:
        """Wait until ``count`` workers of the model are routable, idle and hold no request."""

        def ready() -> list[dict[str, Any]] | None:
            for proc in (self.queen.proc, self.hive.proc):
                if not proc.alive():
                    raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log()[-3000:]}")
            workers = [w for w in self.serving(model_id) if w["in_flight"] == 0]
            if len(workers) != count:
                return None
            for w in workers:
                try:
                    health = worker_health(w)
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


def worker_health(worker: dict[str, Any] | str) -> dict[str, Any]:
    """``GET /health`` of a worker (a ``WorkerInfo`` dict or its URL)."""
    url = worker if isinstance(worker, str) else worker["url"]
    response = httpx.get(f"{url}/health", timeout=5, trust_env=False)
    response.raise_for_status()
    return dict(response.json())


def start_cluster(
    pool: ProcessPool,
    model_path: Path,
    *,
    workers: int = 1,
    slots: int = 1,
    queen: dict[str, Any] | None = None,
    hive: dict[str, Any] | None = None,
    external: tuple[str, ...] = (),
) -> Cluster:
    """A queen and a hive keeping ``workers`` placed workers of ``rbee-tiny``; returns once they serve.

    ``external``: ids of workers started beside the hive (``--managed-by external``, announcing to it).
    Everything starts at once; the hive and the workers find their peers by retrying.
    """
    queen_proc = start_queen(pool, **(queen or {}))
    hive_settings: dict[str, Any] = {
        "placements": [{"model_id": TINY_MODEL_ID, "replicas": workers, "slots": slots}] if workers else [],
        **(hive or {}),
    }
    hive_proc = start_hive(pool, model_path, queen_proc.url, **hive_settings)
    cluster = Cluster(pool, queen_proc, hive_proc, model_path)
    callback = f"{hive_proc.url}/v1/workers/ready"
    cluster.workers_started = [start_worker(pool, worker_id, model_path, callback_url=callback)
                               for worker_id in external]  # fmt: skip
    queen_proc.wait_healthy()
    hive_proc.wait_healthy()
    if workers or external:
        cluster.wait_serving(workers + len(external))
    return cluster


# --------------------------------------------------------------------------- streams


END = "<connection closed>"
DONE = "[DONE]"


def token_text(event: Any) -> str | None:
    """The text of a token event (an OpenAI chunk or a worker ``TokenEvent``), else None."""
    if not isinstance(event, dict):
        return None
    if event.get("type") == "token":
        return str(event["text"])
    choices = event.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    text = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
    return str(text) if text else None


def error_code(event: Any) -> str | None:
    """The code of an error event (OpenAI-style ``{"error": ...}`` or a worker ``ErrorEvent``)."""
    if isinstance(event, dict):
        if isinstance(event.get("error"), dict):
            return str(event["error"].get("code"))
        if event.get("type") == "error":
            return str(event.get("code"))
    return None


class Stream:
    """One streamed POST, read by a thread into a queue: events arrive as the server sends them.

    ``status``/``headers`` once the answer started (``wait_open``); an answer other than 200 is read
    whole into ``body``. Events are the parsed ``data:`` payloads, ``"[DONE]"``, and finally :data:`END`.
    """

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                 read_timeout: float = 20.0) -> None:  # fmt: skip
        self.url = url
        self.body = body
        self.status: int | None = None
        self.headers: httpx.Headers = httpx.Headers()
        self.error_body: dict[str, Any] | None = None
        self.failure: BaseException | None = None
        self.events: list[tuple[float, Any]] = []
        self.opened = threading.Event()
        self.started_at = time.monotonic()
        self._queue: queue.Queue[tuple[float, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._timeout = httpx.Timeout(read_timeout, connect=5.0)
        self._thread = threading.Thread(target=self._run, args=(headers or {},), daemon=True)
        self._thread.start()

    def _run(self, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(timeout=self._timeout, trust_env=False) as http,
                http.stream("POST", self.url, json=self.body, headers=headers) as response,
            ):
                self.status, self.headers, self._response = response.status_code, response.headers, response
                if response.status_code != 200:
                    response.read()
                    with contextlib.suppress(ValueError):
                        self.error_body = response.json()
                    return
                self.opened.set()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("data:"):
                        data = line[5:].strip()
                        self._queue.put((time.monotonic(), DONE if data == DONE else json.loads(data)))
        except Exception as exc:  # reported to the step that reads the stream
            self.failure = exc
        finally:
            self.opened.set()
            self._queue.put((time.monotonic(), END))

    # ------------------------------------------------------------------ reading

    def wait_open(self, timeout: float = 20.0) -> int | None:
        """Wait until the answer started (or failed); its HTTP status (None when the request failed)."""
        assert self.opened.wait(timeout), f"no answer from {self.url} within {timeout:g} s"
        return self.status

    @property
    def request_id(self) -> str:
        return str(self.headers["x-request-id"])

    def next_event(self, timeout: float = 20.0) -> Any:
        try:
            at, event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from {self.url} for {timeout:g} s (a hang)") from None
        self.events.append((at, event))
        return event

    def tokens(self) -> list[str]:
        return [text for _, e in self.events if (text := token_text(e)) is not None]

    def read_tokens(self, count: int, timeout: float = 20.0) -> list[str]:
        """Read until ``count`` tokens arrived in all; fails if the stream ends first."""
        deadline = time.monotonic() + timeout
        while len(self.tokens()) < count:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            assert event not in (END, DONE) and error_code(event) is None, (
                f"the stream ended after {len(self.tokens())} token(s): {event!r} (failure: {self.failure!r})"
            )
        return self.tokens()

    def read_to_end(self, timeout: float = 30.0) -> list[Any]:
        """Read every event up to the end of the connection; the events after what was read before."""
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while not self.events or self.events[-1][1] != END:
            self.next_event(max(0.1, deadline - time.monotonic()))
        return [e for _, e in self.events[start:]]

    def ended(self) -> bool:
        return bool(self.events) and self.events[-1][1] == END

    def disconnect(self) -> None:
        """Go away like a client that closes its connection (the reader leaves at the next line)."""
        self._stop.set()
        self._thread.join(timeout=2)
        if self._thread.is_alive() and self._response is not None:  # nothing arrives: close under the reader
            with contextlib.suppress(Exception):
                self._response.close()
            self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the stream reader did not stop"


class Streams:
    """Opens :class:`Stream` s for one scenario; :meth:`close` disconnects those still open."""

    def __init__(self) -> None:
        self.opened: list[Stream] = []

    def open(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
             read_timeout: float = 20.0) -> Stream:  # fmt: skip
        stream = Stream(url, body, headers, read_timeout)
        self.opened.append(stream)
        return stream

    def close(self) -> None:
        for stream in self.opened:
            with contextlib.suppress(AssertionError):
                stream.disconnect()


def completion_body(max_tokens: int, model: str = TINY_MODEL_ID, stream: bool = True) -> dict[str, Any]:
    return {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": stream,
            "temperature": 1.0}  # fmt: skip


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_model_file() -> Path:
    """The tiny random llama GGUF (``rbee-tiny``): written once, loads in milliseconds."""
    return ensure_tiny_model(MODEL_CACHE)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessPool]:
    """Processes of one scenario; every one (and everything they started) is killed afterwards."""
    pool = ProcessPool(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_file: Path) -> Iterator[Cluster]:
    """Queen + hive keeping one 2-slot worker of ``rbee-tiny`` (context 1024), for the whole session."""
    pool = ProcessPool(tmp_path_factory.mktemp("shared-cluster"))
    try:
        yield start_cluster(pool, tiny_model_file, workers=1, slots=2, queen={"queue_max": 8})
    finally:
        pool.close()


@pytest.fixture
def streams() -> Iterator[Streams]:
    """Streamed requests of one scenario; those still open are disconnected at its end."""
    opened = Streams()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def freezer() -> Iterator[Freezer]:
    """SIGSTOP for one scenario; everything frozen is thawed at its end, also on failure."""
    frozen = Freezer()
    try:
        yield frozen
    finally:
        frozen.close()


@pytest.fixture
def scene() -> SimpleNamespace:
    """Values the steps of one scenario hand to each other."""
    return SimpleNamespace()
