"""Helpers of the queen's unit tests: a hand-moved clock; the wire builders come from the harness."""

from __future__ import annotations

from tests.support.wire import heartbeat, worker_info

__all__ = ["FakeClock", "heartbeat", "worker_info"]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
