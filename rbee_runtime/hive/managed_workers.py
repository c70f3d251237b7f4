"""The hive's own workers: the policy of spawning, watching, restarting and stopping them.

A spawn passes the checks of :mod:`rbee_runtime.hive.worker_launch` and starts a
:class:`~rbee_runtime.hive.worker_process.WorkerProcess` (``loading`` until its ready
callback or a healthy ``/health``). A worker that exits or does not become ready in time is
``crashed``; a placement's worker is restarted after ``restart_backoff_s``, up to
``max_restarts``. An idle worker that no placement asked for is stopped after
``worker_idle_timeout_s``. Stopping is graceful (``/v1/shutdown``, SIGTERM, then SIGKILL
after ``shutdown_grace_s``). Each live worker has a record in the worker table, so a
restarted hive re-adopts the processes that still run and answer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo, WorkerState
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive import worker_launch as launch
from rbee_runtime.hive.config import worker_url
from rbee_runtime.hive.model_limits import effective_ctx_size, model_limits
from rbee_runtime.hive.parts import HiveParts, HiveRoom
from rbee_runtime.hive.registry import LIVE_STATES, InvalidTransitionError
from rbee_runtime.hive.resources import required_ram
from rbee_runtime.hive.worker_process import WorkerProcess, describe_exit, failure_code, log_tail
from rbee_runtime.hive.worker_table import WorkerRecord, WorkerSpec
from rbee_runtime.hive.worker_watch import follow_health, health_with_retries, retire, saw_activity

log = logging.getLogger("rbee.hive.supervisor")

S = WorkerState
KILL_WAIT_S = 5.0
#: Load failures a restart cannot mend: a placement's worker that fails with one is not restarted.
FINAL_CODES = frozenset({ErrorCode.GPU_NOT_AVAILABLE, ErrorCode.DEVICE_UNAVAILABLE, ErrorCode.ENGINE_MISSING})
#: A crashed worker that will not be restarted stays listed (with its last_error) this long.
CRASHED_RETENTION_S = 600.0


@dataclass
class _Managed:
    """Runtime handle of one worker (the process object is not persisted)."""

    spec: WorkerSpec
    port: int = 0
    process: WorkerProcess | None = None
    loading_since: float = 0.0
    stopping: bool = False
    restart_at: float | None = None
    crashed_at: float = 0.0
    last_health_at: float = 0.0
    health_failures: int = 0
    tokens_seen: int = -1
    local_url: str = ""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def poll(self) -> tuple[bool, int | None]:
        """(exited, exit status); a worker without a process has exited."""
        return self.process.poll() if self.process is not None else (True, None)

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            self.process.signal(sig)

    async def wait_exit(self, timeout: float) -> bool:
        return await self.process.wait_exit(timeout) if self.process is not None else True


def _ram_kv(spec: WorkerSpec) -> int:
    """The KV caches a CPU worker keeps in RAM (a GPU worker keeps them in VRAM)."""
    return model_limits(Path(spec.model_path)).kv_cache_bytes(spec.ctx_size, spec.slots) if spec.backend == "cpu" else 0


class ManagedWorkers(HiveRoom):
    """The workers this hive starts; the only place that touches their processes."""

    def __init__(self, parts: HiveParts, backends: list[str], other_ports: Callable[[], set[int]] = set) -> None:
        super().__init__(parts)
        self.backends = backends
        #: Ports taken by workers the hive did not start.
        self.other_ports = other_ports
        #: Set when the hive shuts down: no spawn, no restart, no idle stop.
        self.closing = False
        #: Restarts tried since the hive started, by model (the hive's ``/metrics``).
        self.restarts_total: dict[str, int] = {}
        self._workers: dict[str, _Managed] = {}
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    # ------------------------------------------------------------------ spawning

    async def spawn(self, req: SpawnRequest, placement: str | None = None) -> WorkerInfo:
        """Start a worker for ``req.model_id`` after the checks; answers with state ``loading``."""
        known = self.catalog.get(req.model_id)
        limits = await asyncio.to_thread(model_limits, Path(known.local_path)) if known is not None else None
        async with self._lock:
            if self.closing:
                raise ApiError(503, ErrorCode.HIVE_SHUTTING_DOWN, "This hive is shutting down; try another hive.")
            entry = self.catalog.require(req.model_id)
            if limits is None or known is None or known.local_path != entry.local_path:
                limits = model_limits(Path(entry.local_path))
            ctx_size = effective_ctx_size(entry.model_id, req.ctx_size, self.config.ctx_size, limits)
            req = req.model_copy(update={"ctx_size": ctx_size})
            backend, device = launch.choose_backend_and_device(self.config, self.backends, req)
            launch.check_capacity(self.config, self.registry.count(LIVE_STATES, managed_by="hive"))
            slots = req.slots or self.config.default_slots
            self._preflight(entry.model_id, Path(entry.local_path), entry.size_bytes, backend, ctx_size, slots)
            spec = launch.new_spec(self.config, entry, req, backend, device, placement)
            m = _Managed(spec=spec)
            info = self._launch(m, restarts=0, last_error=None)
            self._workers[spec.worker_id] = m
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

    def placed(self, model_id: str) -> int:
        """Workers of the placement of ``model_id`` (whatever their state)."""
        return sum(1 for m in self._workers.values() if m.spec.placement == model_id)

    def _preflight(self, model_id: str, path: Path, size_bytes: int, backend: str, ctx_size: int, slots: int) -> None:
        """The model file is there and fits in RAM with its KV caches, next to the workers still loading."""
        pending = sum(
            required_ram(m.spec.model_size_bytes, 0, _ram_kv(m.spec))
            for m in self._workers.values()
            if (w := self.registry.get(m.spec.worker_id)) is not None and w.state == S.LOADING
        )
        kv = model_limits(path).kv_cache_bytes(ctx_size, slots) if backend == "cpu" else 0
        launch.check_model_and_ram(self.config, model_id, path, size_bytes, pending, kv,
                                   f"ctx_size {ctx_size} × {slots} slot(s)")  # fmt: skip

    def _launch(self, m: _Managed, restarts: int, last_error: str | None) -> WorkerInfo:
        """Start the process of ``m`` (new or restarted) and return its ``WorkerInfo`` in ``loading``."""
        taken = {w.port for w in self._workers.values() if w.process is not None and w.process.pid is not None}
        port = launch.pick_port(self.config, taken | self.other_ports())
        cmd = launch.worker_command(self.config, m.spec, port)
        try:
            m.process = WorkerProcess.launch(cmd, Path(m.spec.log_path))
        except OSError as exc:
            raise launch.spawn_failed(cmd, exc) from exc
        m.port = port
        m.local_url = worker_url(self.config.local_host, port, self.config.tls is not None)
        now = time.time()
        m.loading_since = now
        m.health_failures = 0
        m.tokens_seen = -1
        m.last_health_at = now
        return launch.loading_info(self.config, m.spec, port, m.process.pid, now, restarts, last_error)

    def _persist(self, m: _Managed) -> None:
        info = self.registry.get(m.spec.worker_id)
        identity = m.process.identity() if m.process is not None else None
        if info is None or identity is None:
            return
        pid, create_time = identity
        record = WorkerRecord(
            spec=m.spec, port=m.port, local_url=m.local_url, pid=pid, create_time=create_time, info=info
        )
        self.table.save_record(record)

    def ready(self, worker_id: str, slots_total: int) -> WorkerInfo:
        """A ready callback of one of ours: ``loading → idle`` (other states are left as they are)."""
        info = self.registry.require(worker_id)
        m = self._workers.get(worker_id)
        if m is None or m.stopping or info.state != S.LOADING:
            return info
        return self._mark_ready(m, slots_total)

    def _mark_ready(self, m: _Managed, slots_total: int) -> WorkerInfo:
        info = self.registry.set_state(m.spec.worker_id, S.IDLE, slots_total=slots_total, last_activity=time.time())
        log.info("worker %s is ready (%.1f s)", m.spec.worker_id, time.time() - m.loading_since)
        self._persist(m)
        return info

    # ------------------------------------------------------------------ re-adoption after a hive restart

    async def readopt(self, rec: WorkerRecord) -> None:
        """Take back the recorded worker if its process still runs and answers; kill it if it runs mute."""
        wid = rec.spec.worker_id
        process = WorkerProcess.find(rec.pid, rec.create_time, marker=wid)
        health = await health_with_retries(self.client, rec.local_url) if process is not None else None
        if process is None or health is None or health.worker_id != wid:
            if process is not None:
                log.warning("worker %s (pid %s) does not answer: killing it", wid, rec.pid)
                process.signal(signal.SIGKILL)
            else:
                log.info("worker %s (pid %s) is gone; forgetting it", wid, rec.pid)
            self.table.delete(wid)
            return
        now = time.time()
        state = health.state if health.state in LIVE_STATES else S.IDLE
        m = _Managed(spec=rec.spec, port=rec.port, process=process, local_url=rec.local_url)
        m.loading_since = m.last_health_at = now
        m.tokens_seen = health.tokens_generated_total
        info = rec.info.model_copy(
            update={
                "hive_id": self.config.hive_id,
                "url": worker_url(self.config.public_host, rec.port, self.config.tls is not None),
                "state": state,
                "pid": process.pid,
                "slots_total": health.slots_total,
                "last_activity": now,
            }
        )
        self._workers[wid] = m
        self.registry.add(info)
        self._persist(m)
        log.info("re-adopted worker %s (pid %s, %s)", wid, process.pid, state.value)

    # ------------------------------------------------------------------ watching

    async def sweep(self, now: float) -> list[Coroutine[Any, Any, None]]:
        """One supervisor tick: restarts due, exits, loading timeouts; the health checks that are due."""
        checks: list[Coroutine[Any, Any, None]] = []
        for m in list(self._workers.values()):
            info = self.registry.get(m.spec.worker_id)
            if m.stopping or info is None:
                continue
            if info.state == S.CRASHED:
                if m.restart_at is not None and now >= m.restart_at:
                    await self._restart(m)
                elif m.restart_at is None and now - m.crashed_at > CRASHED_RETENTION_S:
                    self._forget(m.spec.worker_id)
                continue
            exited, rc = m.poll()
            if exited:
                self._on_exit(m, rc)
                continue
            if info.state == S.LOADING and now - m.loading_since > self.config.loading_timeout_s:
                m.signal(signal.SIGKILL)
                await m.wait_exit(KILL_WAIT_S)
                self._on_crash(m, f"worker did not become ready within {self.config.loading_timeout_s:g} s (killed)")
                continue
            if now - m.last_health_at >= self.config.health_check_interval_s:
                m.last_health_at = now
                checks.append(self._check_health(m))
        return checks

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
        active = saw_activity(health, m.tokens_seen)
        m.tokens_seen = health.tokens_generated_total
        if info.state == S.LOADING:
            if health.state in (S.IDLE, S.BUSY):
                self._mark_ready(m, health.slots_total)  # the ready callback got lost
            return
        info = follow_health(self.registry, info, health, active)
        timeout = self.config.worker_idle_timeout_s
        if (
            timeout > 0
            and m.spec.placement is None
            and info.state == S.IDLE
            and now - info.last_activity > timeout
            and not self.closing
        ):
            log.info("worker %s idle for %.1f s (> %g s): stopping it", wid, now - info.last_activity, timeout)
            self._in_background(self._terminate(m, "idle timeout"))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ crashes and restarts

    def _on_exit(self, m: _Managed, rc: int | None) -> None:
        if rc == 0:
            log.info("worker %s exited by itself (status 0)", m.spec.worker_id)
            m.signal(signal.SIGKILL)
            self._finish(m)
            return
        self._on_crash(m, describe_exit(rc))

    def _on_crash(self, m: _Managed, reason: str) -> None:
        wid = m.spec.worker_id
        m.signal(signal.SIGKILL)  # whatever it left in its process group
        tail = log_tail(Path(m.spec.log_path))
        code = failure_code(tail)
        before = self.registry.get(wid)
        if code is None and before is not None and before.state == S.LOADING:
            code = ErrorCode.WORKER_SPAWN_FAILED  # it never became ready: its log says why
        if code is not None:
            reason = f"{reason} ({code})"
        last_error = reason + (f"\n--- last lines of {m.spec.log_path} ---\n{tail}" if tail else "")
        m.process = None
        m.crashed_at = time.time()
        if self.registry.get(wid) is None:
            return
        try:
            info = self.registry.set_state(wid, S.CRASHED, last_error=last_error, last_error_code=code, pid=None)
        except InvalidTransitionError:
            return
        self.table.delete(wid)
        restartable = code not in FINAL_CODES
        if (
            m.spec.placement is not None
            and restartable
            and info.restarts < self.config.max_restarts
            and not self.closing
        ):
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
            if info is None or m.stopping or self.closing:
                return
            if self.registry.count(LIVE_STATES, managed_by="hive") >= self.config.max_workers:
                m.restart_at = time.time() + max(self.config.restart_backoff_s, 1.0)  # wait for a free place
                return
            restarts = info.restarts + 1
            self.restarts_total[m.spec.model_id] = self.restarts_total.get(m.spec.model_id, 0) + 1
            try:
                spec = m.spec
                self._preflight(spec.model_id, Path(spec.model_path), spec.model_size_bytes, spec.backend,
                                spec.ctx_size, spec.slots)  # fmt: skip
                new = self._launch(m, restarts=restarts, last_error=info.last_error)
            except ApiError as exc:
                self.registry.update(wid, restarts=restarts)
                self._on_crash(m, f"restart failed: {exc.message}")
                return
            self.registry.set_state(wid, S.LOADING, **new.model_dump(exclude={"state", "worker_id"}))
            self._persist(m)
            log.info("restarted worker %s (pid %s, restart %d)", wid, new.pid, restarts)

    # ------------------------------------------------------------------ stopping

    async def stop(self, worker_id: str, reason: str = "requested") -> None:
        """Stop a worker gracefully (``/v1/shutdown``, SIGTERM, then SIGKILL after the grace period)."""
        m = self._workers.get(worker_id)
        if m is None:
            self._forget(worker_id)
            return
        await self._terminate(m, reason)

    async def stop_all(self) -> None:
        ids = list(self._workers)
        if ids:
            log.info("stopping %d worker(s)", len(ids))
        await asyncio.gather(*(self.stop(i, reason="hive shutdown") for i in ids), return_exceptions=True)

    def cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()

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
            exited, _ = m.poll()
            if not exited:
                log.info("stopping worker %s (%s)", wid, reason)
                if not await self.client.shutdown(m.local_url):
                    m.signal(signal.SIGTERM)
                if not await m.wait_exit(self.config.shutdown_grace_s):
                    log.warning(
                        "worker %s still runs %g s after the stop request: SIGKILL", wid, self.config.shutdown_grace_s
                    )
                    m.signal(signal.SIGKILL)
                    await m.wait_exit(KILL_WAIT_S)
            m.signal(signal.SIGKILL)  # leftovers in its process group
        finally:
            self._finish(m)

    def _finish(self, m: _Managed) -> None:
        """The worker is gone for good: report ``stopped`` and forget it."""
        self._forget(m.spec.worker_id)
        m.process = None
        m.stopped.set()

    def _forget(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)
        retire(self.registry, self.table, worker_id)
