from __future__ import annotations

import asyncio

import pytest
from queen_helpers import heartbeat, worker_info

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo, WorkerState
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Scheduler

pytestmark = pytest.mark.anyio


class StubHives:
    """In-memory stand-in for the hive API: refusals per hive, and a worker that loads in N polls."""

    def __init__(self, refuse: dict[str, ApiError] | None = None, ready_after_polls: int = 2) -> None:
        self.refuse = refuse or {}
        self.ready_after_polls = ready_after_polls
        self.spawned: list[str] = []
        self.workers: dict[str, WorkerInfo] = {}
        self.polls = 0

    async def spawn_worker(self, hive_url: str, request: SpawnRequest) -> WorkerInfo:
        hive_id = hive_url.split("//")[1].split(".")[0]
        self.spawned.append(hive_id)
        if hive_id in self.refuse:
            raise self.refuse[hive_id]
        info = worker_info(f"new-{hive_id}", request.model_id, state="loading", hive_id=hive_id, slots=1)
        self.workers[hive_url] = info
        return info

    async def list_workers(self, hive_url: str) -> list[WorkerInfo]:
        self.polls += 1
        info = self.workers[hive_url]
        if self.polls >= self.ready_after_polls:
            info = info.model_copy(update={"state": WorkerState.IDLE})
        return [info]


def make(
    registry: Registry,
    hives: StubHives | None = None,
    *,
    queue_max: int = 2,
    queue_timeout_s: float = 1.0,
    loading_timeout_s: float = 1.0,
) -> Scheduler:
    return Scheduler(
        registry,
        hives or StubHives(),
        queue_max=queue_max,
        queue_timeout_s=queue_timeout_s,
        loading_timeout_s=loading_timeout_s,
        poll_interval_s=0.01,
    )


def registry_with(*workers: WorkerInfo, models: tuple[str, ...] = ("m",)) -> Registry:
    reg = Registry(stale_timeout_s=60)
    reg.apply_heartbeat(heartbeat("h1", models=models, workers=list(workers)))
    return reg


async def test_least_in_flight_and_slot_bound() -> None:
    sched = make(registry_with(worker_info("a", slots=2), worker_info("b", slots=1)))
    leases = [await sched.acquire("m", f"r{i}") for i in range(3)]
    assert sorted(lease.worker_id for lease in leases) == ["a", "a", "b"]
    assert sched.inflight("a") == 2
    assert sched.inflight("b") == 1
    with pytest.raises(ApiError) as err:  # all 3 slots taken and queue_max=0 behaves as full
        sched.queue_max = 0
        await sched.acquire("m", "r4")
    assert err.value.code == "QUEUE_FULL"
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert sched.inflight("a") == sched.inflight("b") == 0


async def test_least_recently_used_breaks_ties() -> None:
    sched = make(registry_with(worker_info("a"), worker_info("b")))
    first = await sched.acquire("m", "r1")
    first.release()
    second = await sched.acquire("m", "r2")
    assert second.worker_id != first.worker_id


async def test_queue_fifo_then_bound_then_timeout() -> None:
    sched = make(registry_with(worker_info("a")), queue_max=2, queue_timeout_s=5)
    held = await sched.acquire("m", "r0")
    w1 = asyncio.create_task(sched.acquire("m", "r1"))
    w2 = asyncio.create_task(sched.acquire("m", "r2"))
    await asyncio.sleep(0.01)
    assert sched.queue_depths() == {"m": 2}

    with pytest.raises(ApiError) as err:
        await sched.acquire("m", "r3")
    assert (err.value.status, err.value.code) == (503, "QUEUE_FULL")
    assert err.value.headers["Retry-After"] == "1"

    held.release()
    lease1 = await asyncio.wait_for(w1, 1)
    assert not w2.done()
    lease1.release()
    lease2 = await asyncio.wait_for(w2, 1)
    assert lease2.worker_id == "a"
    assert sched.queue_depths() == {}

    sched.queue_timeout_s = 0.05
    with pytest.raises(ApiError) as err:
        await sched.acquire("m", "r4")
    assert (err.value.status, err.value.code) == (503, "NO_WORKER_AVAILABLE")
    assert sched.queue_depths() == {}


async def test_heartbeat_capacity_wakes_waiters() -> None:
    reg = registry_with(worker_info("a"))
    sched = make(reg, queue_timeout_s=5)
    await sched.acquire("m", "r0")
    waiting = asyncio.create_task(sched.acquire("m", "r1"))
    await asyncio.sleep(0.01)
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("a"), worker_info("b")]))
    sched.dispatch()
    assert (await asyncio.wait_for(waiting, 1)).worker_id == "b"


async def test_unknown_model_lists_models() -> None:
    sched = make(registry_with(worker_info("a"), models=("m", "other")))
    with pytest.raises(ApiError) as err:
        await sched.acquire("nope", "r1")
    assert (err.value.status, err.value.code) == (404, "MODEL_NOT_FOUND")
    assert "m, other" in err.value.message


async def test_excluded_workers_and_no_hive_to_start_one() -> None:
    sched = make(registry_with(worker_info("a"), models=()))
    with pytest.raises(ApiError) as err:
        await sched.acquire("m", "r1", exclude={"a"})
    assert err.value.code == "NO_WORKER_AVAILABLE"


async def test_cancel_waiting_request() -> None:
    sched = make(registry_with(worker_info("a")), queue_timeout_s=5)
    await sched.acquire("m", "r0")
    waiting = asyncio.create_task(sched.acquire("m", "r1"))
    await asyncio.sleep(0.01)
    assert sched.cancel_waiting("r1")
    assert not sched.cancel_waiting("r1")
    with pytest.raises(ApiError) as err:
        await waiting
    assert err.value.code == "REQUEST_CANCELLED"
    assert sched.queue_depths() == {}


async def test_cancelled_caller_leaves_the_queue() -> None:
    sched = make(registry_with(worker_info("a")), queue_timeout_s=5)
    held = await sched.acquire("m", "r0")
    waiting = asyncio.create_task(sched.acquire("m", "r1"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sched.queue_depths() == {}
    held.release()
    assert sched.inflight("a") == 0


async def test_spawn_on_the_hive_with_room_after_a_refusal() -> None:
    reg = Registry(stale_timeout_s=60)
    reg.apply_heartbeat(heartbeat("h1", models=["m"], ram_available=9 << 30))
    reg.apply_heartbeat(heartbeat("h2", models=["m"], ram_available=1 << 30))
    hives = StubHives(refuse={"h1": ApiError(507, "INSUFFICIENT_RAM", "no RAM")})
    sched = make(reg, hives, queue_timeout_s=5, loading_timeout_s=5)
    lease = await asyncio.wait_for(sched.acquire("m", "r1"), 2)
    assert hives.spawned == ["h1", "h2"]
    assert lease.worker_id == "new-h2"
    assert hives.polls >= 2


async def test_spawn_refused_everywhere() -> None:
    reg = Registry(stale_timeout_s=60)
    reg.apply_heartbeat(heartbeat("h1", models=["m"]))
    hives = StubHives(refuse={"h1": ApiError(409, "MAX_WORKERS", "full")})
    sched = make(reg, hives)
    with pytest.raises(ApiError) as err:
        await asyncio.wait_for(sched.acquire("m", "r1"), 2)
    assert (err.value.status, err.value.code) == (503, "NO_WORKER_AVAILABLE")
    assert "MAX_WORKERS" in err.value.message


async def test_spawn_timeout() -> None:
    reg = Registry(stale_timeout_s=60)
    reg.apply_heartbeat(heartbeat("h1", models=["m"]))
    sched = make(reg, StubHives(ready_after_polls=10_000), loading_timeout_s=0.1)
    with pytest.raises(ApiError) as err:
        await asyncio.wait_for(sched.acquire("m", "r1"), 2)
    assert (err.value.status, err.value.code) == (504, "WORKER_START_TIMEOUT")


async def test_one_spawn_serves_concurrent_requests() -> None:
    reg = Registry(stale_timeout_s=60)
    reg.apply_heartbeat(heartbeat("h1", models=["m"]))
    hives = StubHives(ready_after_polls=3)
    sched = make(reg, hives, queue_timeout_s=5, loading_timeout_s=5)
    first, second = asyncio.create_task(sched.acquire("m", "r1")), asyncio.create_task(sched.acquire("m", "r2"))
    lease = await asyncio.wait_for(first, 2)
    assert hives.spawned == ["h1"]
    lease.release()
    assert (await asyncio.wait_for(second, 2)).worker_id == "new-h1"
