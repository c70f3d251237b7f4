"""Run a worker: bind HTTP (state ``loading``), load in the background, call back, drain on SIGTERM.

Under systemd (``Type=notify``) the worker says ``READY=1`` only once its model is loaded, its first ready
callback went to the hive (taken or not), and its own ``GET /health`` at the URL it announces answered ``ok``
(idle): ``systemctl start rbee-worker@...`` returns then, and fails when the load fails (the worker exits 1,
its reason in the journal) or takes longer than ``TimeoutStartSec=`` (the spec's ``loading_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import uvicorn

from rbee_runtime.common.contracts import ManagedBy, WorkerReady, WorkerState
from rbee_runtime.common.notified_server import NotifiedServer
from rbee_runtime.common.serving import fast_server_options
from rbee_runtime.common.tls import TlsFiles, client_options
from rbee_runtime.worker.app import create_app
from rbee_runtime.worker.callback import Announcer, send_ready
from rbee_runtime.worker.engine import Backend, Engine, EngineConfig, EngineError
from rbee_runtime.worker.service import WorkerService
from rbee_runtime.worker.threads import default_threads, usable_cores

log = logging.getLogger(__name__)

#: Start of the log line of a failed load; the hive reads the code from the worker's log (``last_error_code``).
LOAD_FAILED_MARK = "load failed [{code}]: "


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the command line gives a worker."""

    worker_id: str
    model_id: str
    model_path: str
    host: str = "127.0.0.1"
    port: int = 7840
    slots: int = 1
    ctx_size: int = 2048
    backend: Backend = "cpu"
    device: int = 0
    callback_url: str | None = None
    threads: int | None = None
    grace_period_s: float = 30.0
    log_level: str = "info"
    #: ``--log-format``: ``text`` or ``json`` (one object per line).
    log_format: str = "text"
    #: Seconds between two ready callbacks (0: a single one, with a few retries).
    announce_interval_s: float = 10.0
    managed_by: ManagedBy = "hive"
    #: ``--n-gpu-layers`` (None: ``auto``, decided from the GPU's free VRAM).
    n_gpu_layers: int | None = None
    #: ``--embedding``: an embedding model (``POST /v1/embeddings``, no completions).
    embedding: bool = False
    #: The workers' credential of its hive (from ``--credential-file``): required by its API, sent with its
    #: ready callbacks. None: the worker is open (loopback only).
    credential: str | None = field(default=None, repr=False)
    #: ``--tls-*-file``: serve HTTPS with this certificate; the hive must chain to the cluster CA. None: HTTP.
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        """The URL others reach this worker at."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class WorkerServer(NotifiedServer):
    """uvicorn, plus: the model loads once the socket is bound, and SIGTERM drains instead of stopping."""

    def __init__(self, config: uvicorn.Config, settings: WorkerSettings, service: WorkerService) -> None:
        super().__init__(config, self.status_line)
        self.settings = settings
        self.service = service
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set (on the event loop) once the load ended, loaded or failed.
        self._load_ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.announcer: Announcer | None = None
        if settings.callback_url and settings.announce_interval_s > 0:
            self.announcer = Announcer(
                settings.callback_url, self._ready_message(), settings.announce_interval_s,
                credential=settings.credential, tls=settings.tls,
            )  # fmt: skip

    def _ready_message(self) -> WorkerReady:
        s = self.settings
        return WorkerReady(
            worker_id=s.worker_id,
            url=s.url,
            model_id=s.model_id,
            backend=s.backend,
            device=s.device,
            slots_total=s.slots,
            pid=os.getpid(),
            managed_by=s.managed_by,
        )

    def status_line(self) -> str:
        """What ``systemctl status`` shows once ready: what it serves, a draining worker, a hive it cannot reach."""
        s, service = self.settings, self.service
        if service.state is WorkerState.DRAINING:
            return f"draining: {service.slots.busy} generation(s) running"
        line = f"serving {s.model_id} at {s.url} ({s.slots} slot(s))"
        announcer = self.announcer
        if announcer is not None and announcer.failing_since is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(announcer.failing_since))
            line += f"; hive unreachable since {since}: {announcer.problem}"
        return line

    async def until_ready(self) -> bool:
        """Ready: the model loaded, then the worker's own ``/health`` (at the URL it announces) answers idle."""
        await self._load_ended.wait()
        if self.service.load_error is not None:
            return False
        s = self.settings
        headers = {"Authorization": f"Bearer {s.credential}"} if s.credential else {}
        async with httpx.AsyncClient(timeout=5.0, trust_env=False, headers=headers, **client_options(s.tls)) as http:
            while not self.should_exit:
                try:
                    health = (await http.get(f"{s.url}/health")).json()
                    if health.get("status") == "ok" and health.get("state") in ("idle", "busy"):
                        log.info("first health check passed at %s", s.url)
                        return True
                    problem = f"state {health.get('state')!r}"
                except (httpx.HTTPError, ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                log.warning("own health check at %s failed (%s); retrying", s.url, problem)
                await asyncio.sleep(1.0)
        return False

    def _load_ended_now(self) -> None:
        """Tell the event loop that the load ended (from the loader thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._load_ended.set)

    def stop_announcing(self) -> None:
        if self.announcer is not None:
            self.announcer.stop.set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # e.g. the port could not be bound
            return
        self._loop = asyncio.get_running_loop()
        task = asyncio.create_task(self._drain_when_asked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        threading.Thread(target=self._load_and_announce, name="model-loader", daemon=True).start()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
        elif self._loop is None:  # not serving yet: nothing to drain
            self.notifier.stopping("stopping (SIGTERM before serving)")
            self.should_exit = True
        else:
            log.info("SIGTERM received")
            self._loop.call_soon_threadsafe(self.service.start_drain)

    def _load_and_announce(self) -> None:
        """Thread: load the model, POST the ready callback, become ``idle``, then keep announcing.

        The worker stays ``loading`` while the hive answers its first callback; a first callback
        that fails does not hold it back (it serves, and the announcer keeps trying).
        """
        s = self.settings
        started = time.perf_counter()
        threads = self.service.engine.config.threads
        log.info("loading model %r from %s (%d slot(s), backend %s, %s thread(s))", s.model_id, s.model_path,
                 s.slots, s.backend, threads or "llama.cpp's default")  # fmt: skip
        self.notifier.status(f"loading model {s.model_id} ({_mib(s.model_path)}) from {s.model_path}")
        try:
            self.service.engine.load()
        except EngineError as exc:
            message = f"failed to load model {s.model_id!r} from {s.model_path}: {exc.message}"
            log.error("%s%s", LOAD_FAILED_MARK.format(code=exc.code), message)
            self.service.mark_failed(message, exc.code)
            self.notifier.status(f"{LOAD_FAILED_MARK.format(code=exc.code)}{message}")
            self.exit_code = 1
            self.should_exit = True
            self._load_ended_now()
            return
        log.info("model loaded in %.2f s", time.perf_counter() - started)
        announcer = self.announcer
        first_ok: bool | None = None
        if announcer is not None:
            if not announcer.stop.is_set():  # not when already draining
                first_ok = announcer.announce_once()
        elif s.callback_url:
            try:
                send_ready(s.callback_url, self._ready_message(), credential=s.credential, tls=s.tls)
            except Exception as exc:  # the hive may still find us through /health
                log.error("ready callback to %s failed: %s", s.callback_url, exc)
        self.service.mark_loaded()
        log.info("worker %s idle at %s", s.worker_id, s.url)
        self._load_ended_now()
        if announcer is not None:
            announcer.run(first_done=first_ok)  # until draining or exit

    async def _drain_when_asked(self) -> None:
        """Once draining: wait for running generations (grace period), cancel the rest, stop."""
        await self.service.drain_requested.wait()
        self.stop_announcing()  # a draining worker must not look available to a hive
        self.notifier.stopping(f"draining: {self.service.slots.busy} generation(s) running")
        deadline = time.monotonic() + self.settings.grace_period_s
        while self.service.slots.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.service.slots.busy:
            log.warning("grace period over: cancelling %d running generation(s)", self.service.slots.busy)
            self.service.cancel_all()
            deadline = time.monotonic() + 5.0
            while self.service.slots.busy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # let the last terminal events reach their clients
        log.info("drained; exiting")
        self.should_exit = True


def _mib(path: str) -> str:
    """A model file's size as the status line shows it (``? MiB`` when it cannot be read)."""
    try:
        mib = Path(path).stat().st_size / 2**20
    except OSError:
        return "? MiB"
    return f"{mib:.1f} MiB" if mib < 10 else f"{mib:.0f} MiB"


def run(settings: WorkerSettings) -> int:
    """Serve until drained (0) or until the model fails to load (1); return the exit status."""
    engine = Engine(
        EngineConfig(
            model_path=settings.model_path,
            ctx_size=settings.ctx_size,
            backend=settings.backend,
            device=settings.device,
            threads=settings.threads or default_threads(settings.backend, usable_cores()),
            n_gpu_layers=settings.n_gpu_layers,
            embedding=settings.embedding,
        ),
        slots=settings.slots,
    )
    service = WorkerService(settings.worker_id, settings.model_id, engine)
    config = uvicorn.Config(
        create_app(service, credential=settings.credential),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        lifespan="off",
        **fast_server_options(),
        timeout_graceful_shutdown=5,
        **(settings.tls.uvicorn if settings.tls else {}),
    )
    server = WorkerServer(config, settings, service)
    try:
        server.run()
    finally:
        server.stop_announcing()
    if not service.slots.busy:
        engine.close()
    return server.exit_code
