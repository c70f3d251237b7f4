"""Worker processes: spawn, watch, restart, stop, and re-adopt after a hive restart.

Each worker is a child process in its own process group (so a signal to the hive's
terminal does not reach it and the hive can stop it with everything it started),
with stdout/stderr in ``<data_dir>/logs/<worker_id>.log``. The hive only ever
signals processes it started or re-adopted (checked by pid *and* process start time).

*External* workers (``managed_by: external``, e.g. systemd units ``rbee-worker@<name>``)
register themselves with their ready callback, which they repeat for their whole life. The
hive lists them, health-checks them and reports them to the queen like its own, but never
starts, restarts, stops or signals them: unreachable, they turn ``crashed``, then are dropped
until they announce themselves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil
from pydantic import BaseModel, ValidationError

from rbee_runtime.common.contracts import SpawnRequest, WorkerHealth, WorkerInfo, WorkerReady, WorkerState
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import Catalog
from rbee_runtime.hive.config import HiveConfig, worker_url
from rbee_runtime.hive.registry import LIVE_STATES, InvalidTransitionError, WorkerRegistry
from rbee_runtime.hive.resources import check_ram, required_ram
from rbee_runtime.hive.worker_client import WorkerClient

log = logging.getLogger("rbee.hive.supervisor")

S = WorkerState
TICK_S = 0.2
LOG_TAIL_LINES = 20
KILL_WAIT_S = 5.0
#: A crashed worker that will not be restarted stays listed (with its last_error) this long.
CRASHED_RETENTION_S = 600.0
#: Failed health checks in a row after which an external worker is reported ``crashed``.
EXTERNAL_FAILURES_CRASHED = 3


class WorkerSpec(BaseModel):
    """What a worker runs; kept across restarts and persisted for re-adoption."""

    worker_id: str
    model_id: str
    model_path: str
    model_size_bytes: int
    slots: int
    ctx_size: int
    backend: str
    device: int
    placement: str | None = None
    log_path: str


class WorkerRecord(BaseModel):
    """Row of the ``workers`` table: enough to find the process again after a hive restart."""

    spec: WorkerSpec
    port: int
    local_url: str
    pid: int
    create_time: float
    info: WorkerInfo


class ExternalRecord(BaseModel):
    """Row of the ``workers`` table for an external worker: no process of the hive's, only what it announced."""

    managed_by: Literal["external"]
    info: WorkerInfo


@dataclass
class _External:
    """Runtime state of an external worker (the hive only watches it)."""

    worker_id: str
    last_health_at: float = 0.0
    #: Last time it answered /health or announced itself.
    last_seen: float = 0.0
    health_failures: int = 0
    tokens_seen: int = -1


@dataclass
class _Managed:
    """Runtime handle of one worker (process objects are not persisted)."""

    spec: WorkerSpec
    port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    proc: psutil.Process | None = None
    loading_since: float = 0.0
    stopping: bool = False
    restart_at: float | None = None
    crashed_at: float = 0.0
    last_health_at: float = 0.0
    health_failures: int = 0
    tokens_seen: int = -1
    local_url: str = ""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        return self.proc.pid if self.proc is not None else None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 8192) -> str:
    """The last ``lines`` lines of a log file ('' when unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _working(health: WorkerHealth) -> bool:
    return health.state == S.BUSY or health.slots_busy > 0


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "worker process is gone"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"worker process was killed by {name}"
    return f"worker process exited with status {rc}"


class Supervisor:
    """Starts and watches the workers of this hive; the only place that touches their processes."""

    def __init__(
        self,
        config: HiveConfig,
        catalog: Catalog,
        registry: WorkerRegistry,
        client: WorkerClient,
        backends: list[str],
        on_registered: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.registry = registry
        self.client = client
        self.backends = backends
        #: Called when a worker joins without a state change (an external worker): beat at once.
        self.on_registered = on_registered
        self._managed: dict[str, _Managed] = {}
        self._external: dict[str, _External] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Re-adopt surviving workers, start the placements, then watch."""
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        await self._readopt()
        await self._start_placements()
        self._task = asyncio.create_task(self._monitor(), name="hive-supervisor")

    async def close(self) -> None:
        """Stop watching and stop every worker this hive runs (external workers keep running)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.stop_all()
        for task in list(self._background):
            task.cancel()

    # ------------------------------------------------------------------ public operations

    async def spawn(self, req: SpawnRequest, placement: str | None = None) -> WorkerInfo:
        """Start a worker for ``req.model_id`` after the checks; answers with state ``loading``."""
        async with self._lock:
            if self._closing:
                raise ApiError(503, ErrorCode.HIVE_SHUTTING_DOWN, "This hive is shutting down; try another hive.")
            entry = self.catalog.require(req.model_id)
            backend = req.backend or self.config.backend
            if backend != self.config.backend and backend not in self.backends:
                raise ApiError(
                    400,
                    ErrorCode.BACKEND_UNAVAILABLE,
                    f"Backend {backend!r} is not available on hive {self.config.hive_id!r}; available: "
                    f"{', '.join(sorted({self.config.backend, *self.backends}))}. (Metal is only available on macOS.)",
                    {"backend": backend, "available": sorted({self.config.backend, *self.backends})},
                )
            device = req.device if req.device is not None else (self.config.devices[0] if self.config.devices else 0)
            if backend != "cpu" and self.config.devices and device not in self.config.devices:
                options = " or ".join(f"device {d}" for d in self.config.devices)
                raise ApiError(
                    400,
                    ErrorCode.DEVICE_UNAVAILABLE,
                    f"Device {device} is not available on hive {self.config.hive_id!r}. Try {options}.",
                    {"device": device, "devices": self.config.devices},
                )
            live = self.registry.count(LIVE_STATES, managed_by="hive")
            if live >= self.config.max_workers:
                raise ApiError(
                    409,
                    ErrorCode.MAX_WORKERS,
                    f"Hive {self.config.hive_id!r} already runs {live} workers (max_workers = "
                    f"{self.config.max_workers}). Stop one (DELETE /v1/workers/<id>) or raise max_workers.",
                    {"max_workers": self.config.max_workers, "workers": live},
                )
            self._preflight(entry.model_id, Path(entry.local_path), entry.size_bytes)
            spec = WorkerSpec(
                worker_id=f"worker-{uuid.uuid4().hex[:12]}",
                model_id=entry.model_id,
                model_path=entry.local_path,
                model_size_bytes=entry.size_bytes,
                slots=req.slots or self.config.default_slots,
                ctx_size=req.ctx_size or self.config.ctx_size,
                backend=backend,
                device=device,
                placement=placement,
                log_path="",
            )
            spec.log_path = str(self.config.logs_dir / f"{spec.worker_id}.log")
            m = _Managed(spec=spec)
            info = self._launch(m, restarts=0, last_error=None)
            self._managed[spec.worker_id] = m
            self.registry.add(info)
            self._persist(m)
            log.info(
                "spawned worker %s for %s (pid %s, port %s%s)",
                spec.worker_id,
                spec.model_id,
                info.pid,
                m.port,
                f", placement {placement}" if placement else "",
            )
            return info

    def ready(self, msg: WorkerReady) -> WorkerInfo:
        """A worker's ready callback: ``loading → idle`` for the hive's own workers.

        An external worker is registered (unknown id) or refreshed (known id; a crashed one is
        ``idle`` again). An unknown id that is not external is 404 ``WORKER_NOT_FOUND``.
        """
        wid = msg.worker_id
        if wid in self._external or (wid not in self._managed and msg.managed_by == "external"):
            return self._announce_external(msg)
        info = self.registry.require(wid)
        m = self._managed.get(wid)
        if m is None or m.stopping or info.state != S.LOADING:
            return info
        return self._mark_ready(m, msg.slots_total)

    async def stop(self, worker_id: str, reason: str = "requested") -> None:
        """Stop a worker gracefully (``/v1/shutdown``, SIGTERM, then SIGKILL after the grace period).

        An external worker is refused: 409 ``WORKER_EXTERNALLY_MANAGED``.
        """
        self.registry.require(worker_id)
        if worker_id in self._external:
            raise ApiError(
                409,
                ErrorCode.WORKER_EXTERNALLY_MANAGED,
                f"Worker {worker_id!r} is managed outside this hive (e.g. by systemd unit "
                "rbee-worker@<name>.service), so the hive does not stop it. Change the cluster's placements "
                "and deploy again to remove it (or stop its unit on the host).",
                {"worker_id": worker_id, "managed_by": "external"},
            )
        m = self._managed.get(worker_id)
        if m is None:
            self._forget(worker_id)
            return
        if m.stopping:
            await m.stopped.wait()
            return
        await self._terminate(m, reason)

    async def stop_all(self) -> None:
        ids = list(self._managed)
        if ids:
            log.info("stopping %d worker(s)", len(ids))
        await asyncio.gather(*(self.stop(i, reason="hive shutdown") for i in ids), return_exceptions=True)

    # ------------------------------------------------------------------ launching

    def _preflight(self, model_id: str, path: Path, size_bytes: int) -> None:
        if not path.is_file():
            raise ApiError(
                400,
                ErrorCode.MODEL_FILE_MISSING,
                f"Model file {str(path)!r} of {model_id!r} is no longer on this hive; copy it back and "
                "register it again (POST /v1/models).",
                {"model_id": model_id, "local_path": str(path)},
            )
        pending = sum(
            required_ram(m.spec.model_size_bytes, 0)
            for m in self._managed.values()
            if (w := self.registry.get(m.spec.worker_id)) is not None and w.state == S.LOADING
        )
        check_ram(model_id, size_bytes, self.config.ram_reserve_bytes, pending_bytes=pending)

    def _pick_port(self) -> int:
        taken = {m.port for m in self._managed.values() if m.pid is not None}
        for wid in self._external:
            info = self.registry.get(wid)
            with contextlib.suppress(ValueError):
                if info is not None and (port := urlsplit(info.url).port) is not None:
                    taken.add(port)
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        for port in range(self.config.worker_port_first, self.config.worker_port_last + 1):
            if port in taken:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.config.host, port))
                except OSError:
                    continue
            return port
        raise ApiError(
            503,
            ErrorCode.NO_FREE_PORT,
            f"No free worker port in {self.config.worker_port_first}-{self.config.worker_port_last} on hive "
            f"{self.config.hive_id!r}; widen worker_port_first/worker_port_last or stop a worker.",
            {"first": self.config.worker_port_first, "last": self.config.worker_port_last},
        )

    def _command(self, spec: WorkerSpec, port: int) -> list[str]:
        cmd = [
            *self.config.worker_command,
            "--worker-id", spec.worker_id,
            "--model-id", spec.model_id,
            "--model-path", spec.model_path,
            "--host", self.config.host,
            "--port", str(port),
            "--slots", str(spec.slots),
            "--ctx-size", str(spec.ctx_size),
            "--backend", spec.backend,
            "--device", str(spec.device),
            "--callback-url", f"{self.config.local_url}/v1/workers/ready",
            "--announce-interval", "0",  # the hive re-adopts its own workers; one callback is enough
        ]  # fmt: skip
        if self.config.worker_threads:
            cmd += ["--threads", str(self.config.worker_threads)]
        return cmd

    def _launch(self, m: _Managed, restarts: int, last_error: str | None) -> WorkerInfo:
        """Start the process of ``m`` (new or restarted) and return its ``WorkerInfo`` in ``loading``."""
        spec = m.spec
        port = self._pick_port()
        cmd = self._command(spec, port)
        log_path = Path(spec.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log_path.open("ab") as fh:
                fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} hive starts: {' '.join(cmd)}\n".encode())
                fh.flush()
                popen = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise ApiError(
                500,
                ErrorCode.WORKER_SPAWN_FAILED,
                f"Could not start the worker command {cmd[0]!r}: {exc}. Check worker_command in the hive config.",
                {"command": cmd[0]},
            ) from exc
        m.popen = popen
        try:
            m.proc = psutil.Process(popen.pid)
            m.proc.create_time()
        except psutil.Error:
            m.proc = None
        m.port = port
        m.local_url = worker_url(self.config.local_host, port)
        now = time.time()
        m.loading_since = now
        m.health_failures = 0
        m.tokens_seen = -1
        m.last_health_at = now
        return WorkerInfo(
            worker_id=spec.worker_id,
            hive_id=self.config.hive_id,
            model_id=spec.model_id,
            url=worker_url(self.config.public_host, port),
            state=S.LOADING,
            backend=spec.backend,
            device=spec.device,
            slots_total=spec.slots,
            pid=popen.pid,
            started_at=now,
            last_activity=now,
            restarts=restarts,
            last_error=last_error,
        )

    def _persist(self, m: _Managed) -> None:
        info = self.registry.get(m.spec.worker_id)
        if info is None or m.proc is None:
            return
        try:
            record = WorkerRecord(
                spec=m.spec,
                port=m.port,
                local_url=m.local_url,
                pid=m.proc.pid,
                create_time=m.proc.create_time(),
                info=info,
            )
        except psutil.Error:
            return
        self.catalog.save_worker(m.spec.worker_id, record.model_dump_json())

    def _mark_ready(self, m: _Managed, slots_total: int) -> WorkerInfo:
        info = self.registry.set_state(m.spec.worker_id, S.IDLE, slots_total=slots_total, last_activity=time.time())
        log.info("worker %s is ready (%.1f s)", m.spec.worker_id, time.time() - m.loading_since)
        self._persist(m)
        return info

    # ------------------------------------------------------------------ placements and re-adoption

    async def _start_placements(self) -> None:
        for placement in self.config.placements:
            have = sum(1 for m in self._managed.values() if m.spec.placement == placement.model_id)
            for _ in range(placement.replicas - have):
                try:
                    await self.spawn(
                        SpawnRequest(model_id=placement.model_id, slots=placement.slots), placement.model_id
                    )
                except ApiError as exc:
                    log.error("placement %s: cannot start a worker: %s", placement.model_id, exc.message)

    async def _readopt(self) -> None:
        for row in self.catalog.load_workers():
            try:
                ext = ExternalRecord.model_validate_json(row.record)
            except ValidationError:
                pass
            else:
                await self._readopt_external(ext)
                continue
            try:
                rec = WorkerRecord.model_validate_json(row.record)
            except ValidationError:
                log.warning("dropping unreadable worker record %s", row.worker_id)
                self.catalog.delete_worker(row.worker_id)
                continue
            proc = self._find_process(rec)
            health: WorkerHealth | None = None
            if proc is not None:
                for _ in range(3):
                    health = await self.client.health(rec.local_url)
                    if health is not None:
                        break
                    await asyncio.sleep(0.3)
            if proc is None or health is None or health.worker_id != rec.spec.worker_id:
                if proc is not None:
                    log.warning("worker %s (pid %s) does not answer: killing it", rec.spec.worker_id, rec.pid)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                else:
                    log.info("worker %s (pid %s) is gone; forgetting it", rec.spec.worker_id, rec.pid)
                self.catalog.delete_worker(rec.spec.worker_id)
                continue
            now = time.time()
            state = health.state if health.state in LIVE_STATES else S.IDLE
            m = _Managed(
                spec=rec.spec, port=rec.port, proc=proc, loading_since=now, last_health_at=now, local_url=rec.local_url
            )
            m.tokens_seen = health.tokens_generated_total
            info = rec.info.model_copy(
                update={
                    "hive_id": self.config.hive_id,
                    "url": worker_url(self.config.public_host, rec.port),
                    "state": state,
                    "pid": proc.pid,
                    "slots_total": health.slots_total,
                    "last_activity": now,
                }
            )
            self._managed[rec.spec.worker_id] = m
            self.registry.add(info)
            self._persist(m)
            log.info("re-adopted worker %s (pid %s, %s)", rec.spec.worker_id, proc.pid, state.value)

    async def _readopt_external(self, rec: ExternalRecord) -> None:
        """Take back an external worker of the table if it answers (it is never killed: not ours)."""
        wid = rec.info.worker_id
        health: WorkerHealth | None = None
        for attempt in range(3):
            if attempt:
                await asyncio.sleep(0.3)
            health = await self.client.health(rec.info.url)
            if health is not None:
                break
        if health is None or health.worker_id != wid or health.state not in (S.IDLE, S.BUSY, S.DRAINING):
            log.info(
                "external worker %s does not answer at %s; forgetting it until it announces itself again",
                wid,
                rec.info.url,
            )
            self.catalog.delete_worker(wid)
            return
        now = time.time()
        info = rec.info.model_copy(
            update={
                "hive_id": self.config.hive_id,
                "state": health.state,
                "slots_total": health.slots_total,
                "last_activity": now,
                "managed_by": "external",
            }
        )
        self._external[wid] = _External(
            worker_id=wid, last_health_at=now, last_seen=now, tokens_seen=health.tokens_generated_total
        )
        self.registry.add(info)
        self._persist_external(wid)
        log.info("re-adopted external worker %s at %s (%s)", wid, info.url, health.state.value)

    @staticmethod
    def _find_process(rec: WorkerRecord) -> psutil.Process | None:
        """The recorded process if it still runs (same pid, same start time, our worker id in its args)."""
        try:
            proc = psutil.Process(rec.pid)
            if abs(proc.create_time() - rec.create_time) > 0.5:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE or rec.spec.worker_id not in proc.cmdline():
                return None
            return proc
        except psutil.Error:
            return None

    # ------------------------------------------------------------------ watching

    async def _monitor(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor tick failed")
            await asyncio.sleep(TICK_S)

    async def _tick(self) -> None:
        now = time.time()
        checks = []
        for m in list(self._managed.values()):
            info = self.registry.get(m.spec.worker_id)
            if m.stopping or info is None:
                continue
            if info.state == S.CRASHED:
                if m.restart_at is not None and now >= m.restart_at:
                    await self._restart(m)
                elif m.restart_at is None and now - m.crashed_at > CRASHED_RETENTION_S:
                    self._forget(m.spec.worker_id)
                continue
            exited, rc = self._poll(m)
            if exited:
                self._on_exit(m, rc)
                continue
            if info.state == S.LOADING and now - m.loading_since > self.config.loading_timeout_s:
                self._signal(m, signal.SIGKILL)
                await self._wait_exit(m, KILL_WAIT_S)
                self._on_crash(m, f"worker did not become ready within {self.config.loading_timeout_s:g} s (killed)")
                continue
            if now - m.last_health_at >= self.config.health_check_interval_s:
                m.last_health_at = now
                checks.append(self._check_health(m))
        for ext in list(self._external.values()):
            info = self.registry.get(ext.worker_id)
            if info is None:
                self._external.pop(ext.worker_id, None)
                continue
            unreachable_s = now - ext.last_seen
            if info.state == S.CRASHED and unreachable_s > self.config.external_worker_drop_s:
                self._drop_external(ext.worker_id, f"unreachable for {unreachable_s:.0f} s")
                continue
            if now - ext.last_health_at >= self.config.health_check_interval_s:
                ext.last_health_at = now
                checks.append(self._check_external(ext))
        if checks:
            await asyncio.gather(*checks)

    async def _check_health(self, m: _Managed) -> None:
        wid = m.spec.worker_id
        health = await self.client.health(m.local_url)
        info = self.registry.get(wid)
        if m.stopping or info is None or info.state not in LIVE_STATES:
            return
        if health is None or health.worker_id != wid:
            m.health_failures += 1
            if m.health_failures in (3, 30):
                log.warning("worker %s: %d health checks failed in a row", wid, m.health_failures)
            return
        m.health_failures = 0
        now = time.time()
        active = _working(health) or (m.tokens_seen >= 0 and health.tokens_generated_total != m.tokens_seen)
        m.tokens_seen = health.tokens_generated_total
        if info.state == S.LOADING:
            if health.state in (S.IDLE, S.BUSY):
                self._mark_ready(m, health.slots_total)  # the ready callback got lost
            return
        info = self._apply_health(info, health, active)
        timeout = self.config.worker_idle_timeout_s
        if (
            timeout > 0
            and m.spec.placement is None
            and info.state == S.IDLE
            and now - info.last_activity > timeout
            and not self._closing
        ):
            log.info("worker %s idle for %.1f s (> %g s): stopping it", wid, now - info.last_activity, timeout)
            self._in_background(self._terminate(m, "idle timeout"))

    def _apply_health(self, info: WorkerInfo, health: WorkerHealth, active: bool) -> WorkerInfo:
        """Follow an idle/busy worker's /health: busy ⇄ idle, draining, and ``last_activity``."""
        if info.state not in (S.IDLE, S.BUSY):
            return info
        working = _working(health)
        target = S.BUSY if working else S.IDLE
        if health.state == S.DRAINING:
            target = S.DRAINING
        ended = info.state == S.BUSY and target == S.IDLE
        fields = {"last_activity": time.time()} if active or ended else {}
        if target != info.state or fields:
            info = self.registry.set_state(info.worker_id, target, **fields)
        return info

    # ------------------------------------------------------------------ external workers

    def _announce_external(self, msg: WorkerReady) -> WorkerInfo:
        """Register or refresh an external worker from its (repeated) ready callback."""
        wid = msg.worker_id
        now = time.time()
        announced: dict[str, Any] = {
            "hive_id": self.config.hive_id,
            "model_id": msg.model_id,
            "url": msg.url,
            "backend": msg.backend,
            "device": msg.device,
            "slots_total": msg.slots_total,
            "pid": msg.pid,
            "managed_by": "external",
        }
        ext = self._external.get(wid)
        info = self.registry.get(wid)
        if ext is None or info is None:
            self._warn_unknown_model(wid, msg.model_id)
            info = WorkerInfo(worker_id=wid, state=S.IDLE, started_at=now, last_activity=now, **announced)
            ext = _External(worker_id=wid, last_health_at=now)
            self._external[wid] = ext
            self.registry.add(info)
            log.info(
                "registered external worker %s for %s at %s (pid %s, %d slot(s))",
                wid,
                msg.model_id,
                msg.url,
                msg.pid,
                msg.slots_total,
            )
            if self.on_registered is not None:
                self.on_registered()
        else:
            if msg.model_id != info.model_id:
                self._warn_unknown_model(wid, msg.model_id)
            new_process = msg.pid != info.pid or msg.url != info.url
            if info.state in (S.IDLE, S.BUSY):
                changed = {k: v for k, v in announced.items() if getattr(info, k) != v}
                if not changed:
                    ext.last_seen = now
                    ext.health_failures = 0
                    return info
                info = self.registry.update(wid, **changed)
            else:  # crashed, or draining and a new process took its place: it is back
                fields: dict[str, Any] = {**announced, "state": S.IDLE, "last_activity": now}
                if new_process:
                    fields["started_at"] = now
                    if info.state == S.CRASHED:
                        fields["restarts"] = info.restarts + 1
                info = self.registry.replace(info.model_copy(update=fields))
                log.info("external worker %s is back (pid %s)", wid, msg.pid)
            if new_process:
                ext.tokens_seen = -1
        ext.last_seen = now
        ext.health_failures = 0
        self._persist_external(wid)
        return info

    def _warn_unknown_model(self, worker_id: str, model_id: str) -> None:
        if self.catalog.get(model_id) is None:
            log.warning(
                "external worker %s serves model %r, which is not in this hive's catalog; it is listed anyway "
                "(register the model with POST /v1/models so the queen offers it)",
                worker_id,
                model_id,
            )

    async def _check_external(self, ext: _External) -> None:
        wid = ext.worker_id
        before = self.registry.get(wid)
        if before is None:
            return
        health = await self.client.health(before.url)
        info = self.registry.get(wid)
        if info is None or self._external.get(wid) is not ext:
            return  # dropped or announced anew meanwhile
        now = time.time()
        if health is None or health.worker_id != wid:
            ext.health_failures += 1
            if ext.health_failures < EXTERNAL_FAILURES_CRASHED or info.state not in LIVE_STATES:
                return
            if info.state == S.DRAINING:  # it was being stopped (e.g. systemctl stop): gone for good
                self._drop_external(wid, "stopped after draining")
                return
            reason = (
                f"external worker did not answer {ext.health_failures} health checks in a row at {info.url}; "
                f"it is managed outside the hive (e.g. by systemd), which should restart it; dropped after "
                f"{self.config.external_worker_drop_s:g} s without an answer or a new announce"
            )
            log.warning("worker %s: %s", wid, reason)
            self.registry.set_state(wid, S.CRASHED, last_error=reason)
            self._persist_external(wid)
            return
        ext.health_failures = 0
        ext.last_seen = now
        active = _working(health) or (ext.tokens_seen >= 0 and health.tokens_generated_total != ext.tokens_seen)
        ext.tokens_seen = health.tokens_generated_total
        if info.state not in (S.IDLE, S.BUSY):
            if health.state in (S.IDLE, S.BUSY) and info.state in (S.CRASHED, S.LOADING, S.DRAINING):
                state = S.BUSY if _working(health) else S.IDLE
                self.registry.replace(
                    info.model_copy(update={"state": state, "slots_total": health.slots_total, "last_activity": now})
                )
                log.info("external worker %s answers again", wid)
                self._persist_external(wid)
            elif health.state == S.DRAINING and info.state in (S.CRASHED, S.LOADING):
                self.registry.replace(info.model_copy(update={"state": S.DRAINING}))
            return
        self._apply_health(info, health, active)

    def _persist_external(self, worker_id: str) -> None:
        info = self.registry.get(worker_id)
        if info is None:
            return
        record = ExternalRecord(managed_by="external", info=info)
        self.catalog.save_worker(worker_id, record.model_dump_json())

    def _drop_external(self, worker_id: str, reason: str) -> None:
        """Forget an external worker (its process, if any, is left alone); ``stopped`` in the next heartbeat."""
        log.info("dropping external worker %s (%s); it comes back when it announces itself", worker_id, reason)
        self._external.pop(worker_id, None)
        self._forget(worker_id)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _poll(self, m: _Managed) -> tuple[bool, int | None]:
        """(exited, exit status) of the worker process; status None when it is not our child."""
        if m.popen is not None:
            rc = m.popen.poll()
            return rc is not None, rc
        if m.proc is not None:
            try:
                alive = m.proc.is_running() and m.proc.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            return not alive, None
        return True, None

    def _on_exit(self, m: _Managed, rc: int | None) -> None:
        wid = m.spec.worker_id
        if rc == 0:
            log.info("worker %s exited by itself (status 0)", wid)
            self._signal(m, signal.SIGKILL)
            self._finish(m)
            return
        self._on_crash(m, _describe_exit(rc))

    def _on_crash(self, m: _Managed, reason: str) -> None:
        wid = m.spec.worker_id
        self._signal(m, signal.SIGKILL)  # whatever it left in its process group
        tail = log_tail(Path(m.spec.log_path))
        last_error = reason + (f"\n--- last lines of {m.spec.log_path} ---\n{tail}" if tail else "")
        m.popen = None
        m.proc = None
        m.crashed_at = time.time()
        info = self.registry.get(wid)
        if info is None:
            return
        try:
            info = self.registry.set_state(wid, S.CRASHED, last_error=last_error, pid=None)
        except InvalidTransitionError:
            return
        self.catalog.delete_worker(wid)
        if m.spec.placement is not None and info.restarts < self.config.max_restarts and not self._closing:
            m.restart_at = time.time() + self.config.restart_backoff_s
            log.warning(
                "worker %s crashed (%s); restart %d/%d", wid, reason, info.restarts + 1, self.config.max_restarts
            )
        else:
            m.restart_at = None
            extra = f" after {info.restarts} restarts" if m.spec.placement is not None else ""
            log.error("worker %s crashed (%s)%s; not restarting it", wid, reason, extra)

    async def _restart(self, m: _Managed) -> None:
        wid = m.spec.worker_id
        m.restart_at = None
        async with self._lock:
            info = self.registry.get(wid)
            if info is None or m.stopping or self._closing:
                return
            if self.registry.count(LIVE_STATES, managed_by="hive") >= self.config.max_workers:
                m.restart_at = time.time() + max(self.config.restart_backoff_s, 1.0)  # wait for a free place
                return
            restarts = info.restarts + 1
            try:
                self._preflight(m.spec.model_id, Path(m.spec.model_path), m.spec.model_size_bytes)
                new = self._launch(m, restarts=restarts, last_error=info.last_error)
            except ApiError as exc:
                self.registry.update(wid, restarts=restarts)
                self._on_crash(m, f"restart failed: {exc.message}")
                return
            self.registry.set_state(wid, S.LOADING, **new.model_dump(exclude={"state", "worker_id"}))
            self._persist(m)
            log.info("restarted worker %s (pid %s, restart %d)", wid, new.pid, restarts)

    # ------------------------------------------------------------------ stopping

    async def _terminate(self, m: _Managed, reason: str) -> None:
        wid = m.spec.worker_id
        if m.stopping:
            await m.stopped.wait()
            return
        m.stopping = True
        m.restart_at = None
        try:
            info = self.registry.get(wid)
            if info is not None and info.state in LIVE_STATES and info.state != S.DRAINING:
                self.registry.set_state(wid, S.DRAINING)
            exited, _ = self._poll(m)
            if not exited:
                log.info("stopping worker %s (%s)", wid, reason)
                if not await self.client.shutdown(m.local_url):
                    self._signal(m, signal.SIGTERM)
                if not await self._wait_exit(m, self.config.shutdown_grace_s):
                    log.warning(
                        "worker %s still runs %g s after the stop request: SIGKILL", wid, self.config.shutdown_grace_s
                    )
                    self._signal(m, signal.SIGKILL)
                    await self._wait_exit(m, KILL_WAIT_S)
            self._signal(m, signal.SIGKILL)  # leftovers in its process group
        finally:
            self._finish(m)

    def _finish(self, m: _Managed) -> None:
        """The worker is gone for good: report ``stopped`` and forget it."""
        wid = m.spec.worker_id
        info = self.registry.get(wid)
        if info is not None and info.state != S.STOPPED:
            with contextlib.suppress(InvalidTransitionError):
                self.registry.set_state(wid, S.STOPPED, pid=None)
        self._forget(wid)
        m.popen = None
        m.proc = None
        m.stopped.set()

    def _forget(self, worker_id: str) -> None:
        info = self.registry.get(worker_id)
        if info is not None and info.state != S.STOPPED:
            with contextlib.suppress(InvalidTransitionError):
                self.registry.set_state(worker_id, S.STOPPED, pid=None)
        self.registry.remove(worker_id)
        self._managed.pop(worker_id, None)
        self.catalog.delete_worker(worker_id)

    async def _wait_exit(self, m: _Managed, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            exited, _ = self._poll(m)
            if exited:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    def _signal(self, m: _Managed, sig: signal.Signals) -> None:
        """Signal the worker's process group (its pid is the group id: it started its own session)."""
        pid = m.pid
        if pid is None:
            return
        if m.popen is None and m.proc is not None:
            try:
                if not m.proc.is_running():  # also guards against pid reuse (start time checked)
                    return
            except psutil.Error:
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
