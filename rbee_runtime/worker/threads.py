"""How many CPU threads llama.cpp gets when ``--threads`` is not given.

The rule (docs/api.md, "Worker"): on the CPU backend of a host with at most :data:`SMALL_HOST_CORES`
physical cores (counting only the cores this process may run on), llama.cpp gets ``max(1, cores - 1)``
threads, for generation and for prompt batches alike, so one core stays free for the worker's HTTP
(and a queen or hive on the same host): with every core busy in llama.cpp, each streamed token waits for
the scheduler. On bigger hosts, and on GPU backends, llama-cpp-python's own default stands (``Llama``:
``n_threads = max(logical CPUs // 2, 1)``, ``n_threads_batch = logical CPUs``): one core among many is
not scarce there.
"""

from __future__ import annotations

import os

import psutil

#: Hosts with at most this many physical cores leave one to HTTP.
SMALL_HOST_CORES = 8


def usable_cores() -> int:
    """Physical cores this process may run on (its CPU affinity bounds them; 1 at least)."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS has no affinity
        allowed = physical
    return max(1, min(physical, allowed))


def default_threads(backend: str, cores: int) -> int | None:
    """llama.cpp's threads without ``--threads``: ``max(1, cores - 1)`` on a small CPU host, else None
    (llama-cpp-python's default)."""
    if backend != "cpu" or cores > SMALL_HOST_CORES:
        return None
    return max(1, cores - 1)
