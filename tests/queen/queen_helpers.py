"""Builders of wire objects for the queen's tests."""

from __future__ import annotations

import time

from rbee_runtime.common.contracts import Heartbeat, Resources, WorkerInfo, WorkerState


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def worker_info(
    worker_id: str,
    model_id: str = "m",
    *,
    state: WorkerState | str = WorkerState.IDLE,
    slots: int = 1,
    hive_id: str = "h1",
    url: str | None = None,
    pid: int | None = None,
) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        worker_id=worker_id,
        hive_id=hive_id,
        model_id=model_id,
        url=url or f"http://127.0.0.1:1/{worker_id}",
        state=WorkerState(state),
        slots_total=slots,
        pid=pid,
        started_at=now,
        last_activity=now,
    )


def heartbeat(
    hive_id: str = "h1",
    *,
    models: tuple[str, ...] | list[str] = ("m",),
    workers: tuple[WorkerInfo, ...] | list[WorkerInfo] = (),
    url: str | None = None,
    max_workers: int = 4,
    ram_available: int = 8 << 30,
) -> Heartbeat:
    return Heartbeat(
        hive_id=hive_id,
        url=url or f"http://{hive_id}.invalid:7835",
        version="test",
        backends=["cpu"],
        resources=Resources(
            ram_total_bytes=16 << 30,
            ram_available_bytes=ram_available,
            disk_total_bytes=100 << 30,
            disk_available_bytes=50 << 30,
            cpu_count=2,
        ),
        models=list(models),
        workers=list(workers),
        max_workers=max_workers,
    )
