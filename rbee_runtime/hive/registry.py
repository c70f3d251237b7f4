"""The hive's worker registry: ``WorkerInfo`` by id, with checked state transitions (thread-safe)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rbee_runtime.common.contracts import WorkerInfo, WorkerState
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

log = logging.getLogger("rbee.hive.registry")

S = WorkerState

#: Allowed moves of the life cycle ``loading → idle ⇄ busy → draining → stopped`` (``crashed`` on failure;
#: a crashed worker is restarted through ``loading``).
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    S.LOADING: frozenset({S.IDLE, S.BUSY, S.DRAINING, S.CRASHED, S.STOPPED}),
    S.IDLE: frozenset({S.BUSY, S.DRAINING, S.CRASHED, S.STOPPED}),
    S.BUSY: frozenset({S.IDLE, S.DRAINING, S.CRASHED, S.STOPPED}),
    S.DRAINING: frozenset({S.CRASHED, S.STOPPED}),
    S.CRASHED: frozenset({S.LOADING, S.STOPPED}),
    S.STOPPED: frozenset(),
}

#: States in which a worker holds (or is about to hold) a process and counts against ``max_workers``.
LIVE_STATES = frozenset({S.LOADING, S.IDLE, S.BUSY, S.DRAINING})

ChangeListener = Callable[[WorkerInfo, WorkerInfo], None]


class InvalidTransitionError(ValueError):
    """A state change the life cycle does not allow."""


class WorkerRegistry:
    """Workers this hive runs, keyed by ``worker_id``; values are immutable ``WorkerInfo`` snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, WorkerInfo] = {}
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> None:
        """Call ``listener(old, new)`` after every state change."""
        self._listeners.append(listener)

    def add(self, info: WorkerInfo) -> None:
        with self._lock:
            if info.worker_id in self._workers:
                raise ValueError(f"worker {info.worker_id} is already registered")
            self._workers[info.worker_id] = info

    def get(self, worker_id: str) -> WorkerInfo | None:
        with self._lock:
            return self._workers.get(worker_id)

    def require(self, worker_id: str) -> WorkerInfo:
        """The worker, or ApiError 404 ``WORKER_NOT_FOUND``."""
        info = self.get(worker_id)
        if info is None:
            raise ApiError(
                404,
                ErrorCode.WORKER_NOT_FOUND,
                f"Worker {worker_id!r} is not known to this hive (GET /v1/workers lists them).",
                {"worker_id": worker_id},
            )
        return info

    def list(self) -> list[WorkerInfo]:
        with self._lock:
            return sorted(self._workers.values(), key=lambda w: (w.started_at, w.worker_id))

    def count(self, states: frozenset[WorkerState] = LIVE_STATES, managed_by: str | None = None) -> int:
        """Workers in ``states`` (only those with this ``managed_by`` when given)."""
        with self._lock:
            return sum(
                1
                for w in self._workers.values()
                if w.state in states and (managed_by is None or w.managed_by == managed_by)
            )

    def remove(self, worker_id: str) -> WorkerInfo | None:
        with self._lock:
            return self._workers.pop(worker_id, None)

    def update(self, worker_id: str, **fields: Any) -> WorkerInfo:
        """Change fields other than ``state``; KeyError when unknown."""
        if "state" in fields:
            raise ValueError("use set_state() to change the state")
        with self._lock:
            new = self._workers[worker_id].model_copy(update=fields)
            self._workers[worker_id] = new
            return new

    def set_state(self, worker_id: str, state: WorkerState, **fields: Any) -> WorkerInfo:
        """Move a worker to ``state`` (checked against ``TRANSITIONS``) and update ``fields``.

        Setting the state it already has only updates the fields. KeyError when unknown.
        """
        with self._lock:
            old = self._workers[worker_id]
            if state != old.state and state not in TRANSITIONS[old.state]:
                raise InvalidTransitionError(f"worker {worker_id}: {old.state.value} → {state.value} is not allowed")
            new = old.model_copy(update={**fields, "state": state})
            self._workers[worker_id] = new
        if old.state != new.state:
            log.info("worker %s: %s → %s", worker_id, old.state.value, new.state.value)
            self._notify(old, new)
        return new

    def replace(self, info: WorkerInfo) -> WorkerInfo:
        """Put ``info`` in place of the worker registered under its id, whatever its state was.

        For a new process of a worker the hive does not own (an external worker that announces
        itself again after a crash): no transition check; listeners hear the state change.
        KeyError when unknown.
        """
        with self._lock:
            old = self._workers[info.worker_id]
            self._workers[info.worker_id] = info
        if old.state != info.state:
            log.info("worker %s: %s → %s (announced again)", info.worker_id, old.state.value, info.state.value)
            self._notify(old, info)
        return info

    def _notify(self, old: WorkerInfo, new: WorkerInfo) -> None:
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("worker state listener failed")

    def touch(self, worker_id: str, when: float | None = None) -> None:
        """Record activity now (or at ``when``)."""
        self.update(worker_id, last_activity=when if when is not None else time.time())
