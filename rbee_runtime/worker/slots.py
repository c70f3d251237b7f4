"""The slot pool: at most ``total`` generations run at once, one per llama.cpp context."""

from __future__ import annotations

import threading

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError


class SlotPool:
    """Thread-safe pool of slot indexes; acquiring from a full pool is a 503 ``ALL_SLOTS_BUSY``.

    Counts what happened to it (exposed on the worker's ``/metrics``): ``busy_max``, the most slots
    busy at once since start; ``full_total``, how often the last free slot was taken; ``refused_total``,
    how many acquisitions found no free slot.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a worker needs at least one slot")
        self.total = total
        self._free = list(range(total))
        self._lock = threading.Lock()
        self.busy_max = 0
        self.full_total = 0
        self.refused_total = 0

    @property
    def busy(self) -> int:
        with self._lock:
            return self.total - len(self._free)

    def acquire(self) -> int:
        """Take a free slot now, or raise ``ApiError`` 503 ``ALL_SLOTS_BUSY`` (never waits)."""
        with self._lock:
            if self._free:
                slot = self._free.pop(0)
                busy = self.total - len(self._free)
                self.busy_max = max(self.busy_max, busy)
                self.full_total += busy == self.total
                return slot
            self.refused_total += 1
        raise ApiError(
            503,
            ErrorCode.ALL_SLOTS_BUSY,
            f"All {self.total} slot(s) of this worker are busy; retry shortly.",
            details={"slots_total": self.total, "slots_busy": self.total},
            headers={"Retry-After": "1"},
        )

    def release(self, slot: int) -> None:
        """Give a slot back (idempotent)."""
        with self._lock:
            if slot not in self._free and 0 <= slot < self.total:
                self._free.append(slot)
                self._free.sort()
