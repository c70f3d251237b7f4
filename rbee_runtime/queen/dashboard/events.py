"""Recent errors for the dashboard: the queen's warnings, workers that crashed, hives that went quiet, and
requests answered with an error — gathered from the log and from registry snapshots, off the request path."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from rbee_runtime.common.contracts import WorkerState
from rbee_runtime.queen.dashboard.history import Sample
from rbee_runtime.queen.dashboard.schema import ErrorView
from rbee_runtime.queen.registry import HiveSnapshot, WorkerSnapshot

#: Longest message kept (a crashed worker's error carries the tail of its log: its first line is shown).
MAX_MESSAGE_CHARS = 500
#: Logger whose warnings and errors are shown (every queen module logs below it).
QUEEN_LOGGER = "rbee_runtime.queen"


class RecentErrors:
    """The last ``size`` errors, newest first (thread safe: log records come from any thread)."""

    def __init__(self, size: int = 50, clock: Callable[[], float] = time.time) -> None:
        self._items: deque[ErrorView] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, source: str, message: str) -> None:
        text = message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
        item = ErrorView.model_validate({"at": round(self._clock(), 3), "source": source, "message": text})
        with self._lock:
            self._items.append(item)

    def recent(self) -> list[ErrorView]:
        with self._lock:
            return list(reversed(self._items))


class LogCapture(logging.Handler):
    """Copies the queen's warnings and errors into :class:`RecentErrors`."""

    def __init__(self, errors: RecentErrors) -> None:
        super().__init__(logging.WARNING)
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.errors.add("queen", record.getMessage())
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no reason given"


class ClusterWatch:
    """Notes what changed for the worse between two registry snapshots."""

    def __init__(self, errors: RecentErrors) -> None:
        self.errors = errors
        self._hives: dict[str, str] = {}
        self._workers: dict[str, WorkerSnapshot] = {}

    def observe(self, hives: list[HiveSnapshot], workers: list[WorkerSnapshot]) -> None:
        """Compare with the last snapshot: hives gone stale or dropped, workers crashed, restarted or lost."""
        statuses: dict[str, str] = {h.heartbeat.hive_id: h.status for h in hives}
        for hive_id, status in statuses.items():
            if status == "stale" and self._hives.get(hive_id) == "online":
                self.errors.add("hive", f"hive {hive_id} stopped sending heartbeats (stale)")
        for hive_id in self._hives.keys() - statuses.keys():
            self.errors.add("hive", f"hive {hive_id} was dropped (no heartbeat)")
        current = {w.info.worker_id: w for w in workers}
        for worker_id, now in current.items():
            self._worker_changed(self._workers.get(worker_id), now)
        for worker_id, before in self._workers.items():
            if worker_id not in current and before.info.state not in (WorkerState.STOPPED, WorkerState.DRAINING):
                self.errors.add("worker", f"worker {worker_id} ({before.info.model_id}) is gone from hive "
                                          f"{before.info.hive_id} while {before.info.state.value}")  # fmt: skip
        self._hives, self._workers = statuses, current

    def _worker_changed(self, before: WorkerSnapshot | None, now: WorkerSnapshot) -> None:
        info = now.info
        crashed = info.state == WorkerState.CRASHED
        was_crashed = before is not None and before.info.state == WorkerState.CRASHED
        restarted = before is not None and info.restarts > before.info.restarts
        if crashed and not was_crashed:
            self.errors.add("worker", f"worker {info.worker_id} ({info.model_id}) on {info.hive_id} crashed: "
                                      f"{_first_line(info.last_error)}")  # fmt: skip
        elif restarted and not was_crashed:  # the crash fell between two snapshots
            self.errors.add("worker", f"worker {info.worker_id} ({info.model_id}) on {info.hive_id} crashed and "
                                      f"was restarted: {_first_line(info.last_error)}")  # fmt: skip


def note_request_errors(errors: RecentErrors, new: Sample, old: Sample) -> None:
    """Requests answered with a status of 400 or more between two samples, per model and status."""
    for (model, status), value in sorted(new.requests.items()):
        count = int(value - old.requests.get((model, status), 0.0))
        if count > 0 and int(status) >= 400:
            errors.add("request", f"{count} request(s) for {model} answered HTTP {status}")
