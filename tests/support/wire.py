"""Builders of the wire objects a hive sends (``WorkerInfo``, ``Heartbeat``), for tests that play a hive."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rbee_runtime.common.contracts import Heartbeat, Resources, WorkerInfo, WorkerState


def worker_info(worker_id: str, model_id: str = "m", *, state: WorkerState | str = WorkerState.IDLE, slots: int = 1,
                hive_id: str = "h1", url: str | None = None, pid: int | None = None) -> WorkerInfo:  # fmt: skip
    """A worker as a hive reports it in its heartbeat."""
    now = time.time()
    return WorkerInfo(
        worker_id=worker_id, hive_id=hive_id, model_id=model_id, url=url or f"http://127.0.0.1:1/{worker_id}",
        state=WorkerState(state), slots_total=slots, pid=pid, started_at=now, last_activity=now,
    )  # fmt: skip


def heartbeat(hive_id: str = "h1", *, models: Sequence[str] | None = None, workers: Sequence[WorkerInfo] = (),
              url: str | None = None, max_workers: int = 4, ram_available: int = 8 << 30, cpu_count: int = 2,
              version: str = "test") -> Heartbeat:  # fmt: skip
    """The heartbeat a hive sends to the queen (``models``: default ``["m"]``)."""
    return Heartbeat(
        hive_id=hive_id, url=url or f"http://{hive_id}.invalid:7835", version=version, backends=["cpu"],
        resources=Resources(ram_total_bytes=16 << 30, ram_available_bytes=ram_available, disk_total_bytes=100 << 30,
                            disk_available_bytes=50 << 30, cpu_count=cpu_count),
        models=list(models if models is not None else ["m"]), workers=list(workers), max_workers=max_workers,
    )  # fmt: skip
