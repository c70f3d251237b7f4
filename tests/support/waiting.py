"""Waiting for a condition: the one poll-until helper of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")


def wait_until(fn: Callable[[], T | None], timeout: float = 10.0, what: str = "", interval: float = 0.05) -> T:
    """Call ``fn`` until it returns something truthy and return that; fail with ``what`` and the last value.

    ``fn`` may raise (e.g. ``AssertionError`` when a process it watches exited): that ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout:g} s still waiting for {what or fn}; last value: {last!r}")
        time.sleep(interval)


def gone(proc: psutil.Process) -> bool:
    """True when the process has exited (a zombie counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
