"""Workers the hive did not start (``managed_by: external``, e.g. systemd units ``rbee-worker@<name>``).

They register themselves with their ready callback, which they repeat for their whole life
(:meth:`ExternalWorkers.announce`). The hive lists them, health-checks them and reports them
to the queen like its own, but never starts, restarts, stops or signals them: unreachable,
they turn ``crashed``, then are dropped until they announce themselves again. After a hive
restart, those of the worker table that still answer are re-adopted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rbee_runtime.common.contracts import WorkerInfo, WorkerReady, WorkerState
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.parts import HiveParts, HiveRoom
from rbee_runtime.hive.registry import LIVE_STATES
from rbee_runtime.hive.worker_table import ExternalRecord
from rbee_runtime.hive.worker_watch import follow_health, health_with_retries, retire, saw_activity, working

log = logging.getLogger("rbee.hive.supervisor")

S = WorkerState
#: Failed health checks in a row after which an external worker is reported ``crashed``.
EXTERNAL_FAILURES_CRASHED = 3


@dataclass
class _External:
    """Runtime state of an external worker (the hive only watches it)."""

    worker_id: str
    last_health_at: float = 0.0
    #: Last time it answered /health or announced itself.
    last_seen: float = 0.0
    health_failures: int = 0
    tokens_seen: int = -1


class ExternalWorkers(HiveRoom):
    """The external workers of this hive: announced, health-checked, dropped, re-adopted; never signalled."""

    def __init__(self, parts: HiveParts, on_registered: Callable[[], None] | None = None) -> None:
        super().__init__(parts)
        #: Called when a worker joins without a state change: beat at once.
        self.on_registered = on_registered
        self._workers: dict[str, _External] = {}

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    def ports(self) -> set[int]:
        """Ports of the external workers' URLs (a hive worker must not take them)."""
        ports: set[int] = set()
        for wid in self._workers:
            info = self.registry.get(wid)
            with contextlib.suppress(ValueError):
                if info is not None and (port := urlsplit(info.url).port) is not None:
                    ports.add(port)
        return ports

    @staticmethod
    def stop_refused(worker_id: str) -> ApiError:
        """409 ``WORKER_EXTERNALLY_MANAGED``: the hive does not stop a worker it did not start."""
        return ApiError(
            409,
            ErrorCode.WORKER_EXTERNALLY_MANAGED,
            f"Worker {worker_id!r} is managed outside this hive (e.g. by systemd unit "
            "rbee-worker@<name>.service), so the hive does not stop it. Change the cluster's placements "
            "and deploy again to remove it (or stop its unit on the host).",
            {"worker_id": worker_id, "managed_by": "external"},
        )

    # ------------------------------------------------------------------ announce

    def announce(self, msg: WorkerReady) -> WorkerInfo:
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
        ext = self._workers.get(wid)
        info = self.registry.get(wid)
        if ext is None or info is None:
            self._warn_unknown_model(wid, msg.model_id)
            info = WorkerInfo(worker_id=wid, state=S.IDLE, started_at=now, last_activity=now, **announced)
            ext = _External(worker_id=wid, last_health_at=now)
            self._workers[wid] = ext
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
        self._persist(wid)
        return info

    def _warn_unknown_model(self, worker_id: str, model_id: str) -> None:
        if self.catalog.get(model_id) is None:
            log.warning(
                "external worker %s serves model %r, which is not in this hive's catalog; it is listed anyway "
                "(register the model with POST /v1/models so the queen offers it)",
                worker_id,
                model_id,
            )

    # ------------------------------------------------------------------ watching

    def sweep(self, now: float) -> list[Coroutine[Any, Any, None]]:
        """One supervisor tick: drop the long-unreachable ones; the health checks that are due."""
        checks: list[Coroutine[Any, Any, None]] = []
        for ext in list(self._workers.values()):
            info = self.registry.get(ext.worker_id)
            if info is None:
                self._workers.pop(ext.worker_id, None)
                continue
            unreachable_s = now - ext.last_seen
            if info.state == S.CRASHED and unreachable_s > self.config.external_worker_drop_s:
                self._drop(ext.worker_id, f"unreachable for {unreachable_s:.0f} s")
                continue
            if now - ext.last_health_at >= self.config.health_check_interval_s:
                ext.last_health_at = now
                checks.append(self._check(ext))
        return checks

    async def _check(self, ext: _External) -> None:
        wid = ext.worker_id
        before = self.registry.get(wid)
        if before is None:
            return
        health = await self.client.health(before.url)
        info = self.registry.get(wid)
        if info is None or self._workers.get(wid) is not ext:
            return  # dropped or announced anew meanwhile
        now = time.time()
        if health is None or health.worker_id != wid:
            ext.health_failures += 1
            if ext.health_failures < EXTERNAL_FAILURES_CRASHED or info.state not in LIVE_STATES:
                return
            if info.state == S.DRAINING:  # it was being stopped (e.g. systemctl stop): gone for good
                self._drop(wid, "stopped after draining")
                return
            reason = (
                f"external worker did not answer {ext.health_failures} health checks in a row at {info.url}; "
                f"it is managed outside the hive (e.g. by systemd), which should restart it; dropped after "
                f"{self.config.external_worker_drop_s:g} s without an answer or a new announce"
            )
            log.warning("worker %s: %s", wid, reason)
            self.registry.set_state(wid, S.CRASHED, last_error=reason)
            self._persist(wid)
            return
        ext.health_failures = 0
        ext.last_seen = now
        active = saw_activity(health, ext.tokens_seen)
        ext.tokens_seen = health.tokens_generated_total
        if info.state not in (S.IDLE, S.BUSY):
            if health.state in (S.IDLE, S.BUSY) and info.state in (S.CRASHED, S.LOADING, S.DRAINING):
                state = S.BUSY if working(health) else S.IDLE
                self.registry.replace(
                    info.model_copy(update={"state": state, "slots_total": health.slots_total, "last_activity": now})
                )
                log.info("external worker %s answers again", wid)
                self._persist(wid)
            elif health.state == S.DRAINING and info.state in (S.CRASHED, S.LOADING):
                self.registry.replace(info.model_copy(update={"state": S.DRAINING}))
            return
        follow_health(self.registry, info, health, active)

    def _persist(self, worker_id: str) -> None:
        info = self.registry.get(worker_id)
        if info is not None:
            self.table.save_record(ExternalRecord(managed_by="external", info=info))

    def _drop(self, worker_id: str, reason: str) -> None:
        """Forget an external worker (its process, if any, is left alone); ``stopped`` in the next heartbeat."""
        log.info("dropping external worker %s (%s); it comes back when it announces itself", worker_id, reason)
        self._workers.pop(worker_id, None)
        retire(self.registry, self.table, worker_id)

    # ------------------------------------------------------------------ after a hive restart

    async def readopt(self, rec: ExternalRecord) -> None:
        """Take back an external worker of the table if it answers (it is never killed: not ours)."""
        wid = rec.info.worker_id
        health = await health_with_retries(self.client, rec.info.url)
        if health is None or health.worker_id != wid or health.state not in (S.IDLE, S.BUSY, S.DRAINING):
            log.info(
                "external worker %s does not answer at %s; forgetting it until it announces itself again",
                wid,
                rec.info.url,
            )
            self.table.delete(wid)
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
        self._workers[wid] = _External(
            worker_id=wid, last_health_at=now, last_seen=now, tokens_seen=health.tokens_generated_total
        )
        self.registry.add(info)
        self._persist(wid)
        log.info("re-adopted external worker %s at %s (%s)", wid, info.url, health.state.value)
