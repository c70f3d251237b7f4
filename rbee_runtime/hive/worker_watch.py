"""What watching a worker means for both kinds, the hive's own and external ones.

Following its ``/health`` (busy ⇄ idle, draining, ``last_activity``), asking a worker that
may still be coming up a few times, and retiring a worker (``stopped`` for the next
heartbeat, then gone from the registry and the worker table).
"""

from __future__ import annotations

import contextlib
import time

from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_fixed

from rbee_runtime.common.contracts import WorkerHealth, WorkerInfo, WorkerState
from rbee_runtime.hive.registry import InvalidTransitionError, WorkerRegistry
from rbee_runtime.hive.worker_client import WorkerClient
from rbee_runtime.hive.worker_table import WorkerTable

S = WorkerState


def working(health: WorkerHealth) -> bool:
    """The worker reports a generation in progress."""
    return health.state == S.BUSY or health.slots_busy > 0


def saw_activity(health: WorkerHealth, tokens_seen: int) -> bool:
    """Work now, or tokens generated since the last check (``tokens_seen`` -1: no earlier check)."""
    return working(health) or (tokens_seen >= 0 and health.tokens_generated_total != tokens_seen)


def follow_health(registry: WorkerRegistry, info: WorkerInfo, health: WorkerHealth, active: bool) -> WorkerInfo:
    """Follow an idle/busy worker's /health: busy ⇄ idle, draining, and ``last_activity``."""
    if info.state not in (S.IDLE, S.BUSY):
        return info
    target = S.BUSY if working(health) else S.IDLE
    if health.state == S.DRAINING:
        target = S.DRAINING
    ended = info.state == S.BUSY and target == S.IDLE
    fields = {"last_activity": time.time()} if active or ended else {}
    if target != info.state or fields:
        info = registry.set_state(info.worker_id, target, **fields)
    return info


async def health_with_retries(
    client: WorkerClient, url: str, attempts: int = 3, wait_s: float = 0.3
) -> WorkerHealth | None:
    """``/health`` of a worker, asked up to ``attempts`` times while it does not answer; None if it never does."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(wait_s),
        retry=retry_if_result(lambda health: health is None),
        retry_error_callback=lambda _state: None,
    )
    health: WorkerHealth | None = await retrying(client.health, url)
    return health


def retire(registry: WorkerRegistry, table: WorkerTable, worker_id: str) -> None:
    """Report the worker ``stopped`` (listeners hear it) and forget it in the registry and the table."""
    info = registry.get(worker_id)
    if info is not None and info.state != S.STOPPED:
        with contextlib.suppress(InvalidTransitionError):
            registry.set_state(worker_id, S.STOPPED, pid=None)
    registry.remove(worker_id)
    table.delete(worker_id)
