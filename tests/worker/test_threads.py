"""llama.cpp's threads without ``--threads``: one core left to HTTP on a small CPU host."""

from __future__ import annotations

import os

import psutil
import pytest

from rbee_runtime.worker.threads import SMALL_HOST_CORES, default_threads, usable_cores


@pytest.mark.parametrize(
    ("backend", "cores", "expected"),
    [("cpu", 1, 1), ("cpu", 2, 1), ("cpu", 4, 3), ("cpu", 8, 7), ("cpu", 9, None), ("cpu", 64, None),
     ("cuda", 2, None), ("metal", 8, None)],
)  # fmt: skip
def test_a_small_cpu_host_leaves_one_core(backend: str, cores: int, expected: int | None) -> None:
    assert default_threads(backend, cores) == expected
    assert SMALL_HOST_CORES == 8


def test_usable_cores_are_the_physical_ones_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 16 if logical else 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(3)), raising=False)
    assert usable_cores() == 3  # a cpuset of 3 CPUs on an 8-core host
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert usable_cores() == 8
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: None)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1
