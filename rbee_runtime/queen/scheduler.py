"""Choose a worker for each request, start one when none runs the model, queue when all are full.

Slots are counted at the queen: a worker never gets more requests than its ``slots_total``. A
request takes the routable worker with the fewest requests in flight (then the one used least
recently); when every worker of the model is full it waits in a bounded FIFO queue per model. When
no worker runs the model but an online hive's catalog holds it, the hive with the most free
capacity is asked to start one (the next hive on 507/409) and the queued requests wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo, WorkerState
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_chunks import request_cancelled
from rbee_runtime.queen.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["Lease", "Scheduler", "model_not_found", "no_worker_available", "request_cancelled", "spawn_failed"]


class HiveSpawner(Protocol):
    """What the scheduler needs from a hive (see :class:`rbee_runtime.queen.clients.HiveClient`)."""

    async def spawn_worker(self, hive_url: str, request: SpawnRequest) -> WorkerInfo:
        """``POST {hive}/v1/workers``; raises :class:`ApiError` with the hive's status and code."""
        ...

    async def list_workers(self, hive_url: str) -> list[WorkerInfo]:
        """``GET {hive}/v1/workers``."""
        ...


@dataclass(eq=False)
class Lease:
    """One slot of one worker, held by one request until :meth:`release`."""

    worker_id: str
    url: str
    model_id: str
    _on_release: Callable[[Lease], None] = field(repr=False)
    released: bool = False
    #: The hive that reported the worker (whose workers' credential the worker takes).
    hive_id: str = ""

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self.released:
            self.released = True
            self._on_release(self)


@dataclass(eq=False)
class _Waiter:
    request_id: str
    model_id: str
    exclude: frozenset[str]
    future: asyncio.Future[Lease]


def model_not_found(model_id: str, available: list[str]) -> ApiError:
    """404 naming the models that exist."""
    listed = ", ".join(available) if available else "none (no hive has reported a model yet)"
    return ApiError(
        404,
        ErrorCode.MODEL_NOT_FOUND,
        f"The model '{model_id}' does not exist in any hive's catalog. Available models: {listed}.",
        details={"model": model_id, "available": available},
    )


def no_worker_available(model_id: str, reason: str, details: dict[str, Any] | None = None) -> ApiError:
    """503 when no worker can take the request."""
    return ApiError(
        503,
        ErrorCode.NO_WORKER_AVAILABLE,
        f"No worker is available for model '{model_id}': {reason}",
        details={"model": model_id, **(details or {})},
        headers={"Retry-After": "1"},
    )


def spawn_failed(model_id: str, worker: WorkerInfo) -> ApiError:
    """502 when the worker a hive started for the request ended before it was ready (its log tail included)."""
    why = (worker.last_error or f"it is {worker.state}").strip()
    return ApiError(
        502,
        ErrorCode.WORKER_SPAWN_FAILED,
        f"The worker hive {worker.hive_id} started for model '{model_id}' failed before it was ready: {why}",
        details={
            "model": model_id,
            "hive_id": worker.hive_id,
            "worker_id": worker.worker_id,
            "state": str(worker.state),
            "last_error": worker.last_error,
            "last_error_code": worker.last_error_code,
        },
    )


class Scheduler:
    """Slot accounting, per-model queues and on-demand worker start."""

    def __init__(
        self,
        registry: Registry,
        spawner: HiveSpawner,
        *,
        queue_max: int,
        queue_timeout_s: float,
        loading_timeout_s: float,
        poll_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.spawner = spawner
        self.queue_max = queue_max
        self.queue_timeout_s = queue_timeout_s
        self.loading_timeout_s = loading_timeout_s
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._inflight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        self._queues: dict[str, deque[_Waiter]] = {}
        self._spawns: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ introspection

    def inflight(self, worker_id: str) -> int:
        """Requests the queen has in flight on a worker."""
        return self._inflight.get(worker_id, 0)

    def queue_depths(self) -> dict[str, int]:
        """Waiting requests per model."""
        return {m: len(q) for m, q in self._queues.items() if q}

    def spawning(self, model_id: str) -> bool:
        """True while the queen is starting a worker for ``model_id``."""
        return model_id in self._spawns

    # ------------------------------------------------------------------ slots

    def _take(self, model_id: str, exclude: Iterable[str]) -> Lease | None:
        free = [
            w
            for w in self.registry.routable_workers(model_id, exclude)
            if self._inflight.get(w.worker_id, 0) < w.slots_total
        ]
        if not free:
            return None
        best = min(
            free,
            key=lambda w: (self._inflight.get(w.worker_id, 0), self._last_used.get(w.worker_id, 0.0), w.worker_id),
        )
        self._inflight[best.worker_id] = self._inflight.get(best.worker_id, 0) + 1
        self._last_used[best.worker_id] = self._clock()
        return Lease(worker_id=best.worker_id, url=best.url, model_id=model_id, _on_release=self._released,
                     hive_id=best.hive_id)  # fmt: skip

    def _released(self, lease: Lease) -> None:
        left = self._inflight.get(lease.worker_id, 0) - 1
        if left > 0:
            self._inflight[lease.worker_id] = left
        else:
            self._inflight.pop(lease.worker_id, None)
        self.dispatch(lease.model_id)

    def dispatch(self, model_id: str | None = None) -> None:
        """Hand free slots to waiting requests, oldest first (call after any change of capacity)."""
        models = [model_id] if model_id is not None else list(self._queues)
        for model in models:
            queue = self._queues.get(model)
            if not queue:
                continue
            for waiter in list(queue):
                if waiter.future.done():
                    queue.remove(waiter)
                    continue
                lease = self._take(model, waiter.exclude)
                if lease is None:
                    if not self.registry.routable_workers(model, ()):
                        break
                    continue
                queue.remove(waiter)
                waiter.future.set_result(lease)
            if not queue:
                self._queues.pop(model, None)

    # ------------------------------------------------------------------ acquire

    async def acquire(
        self, model_id: str, request_id: str, exclude: Iterable[str] = (), *, priority: bool = False
    ) -> Lease:
        """Wait for a slot on a worker of ``model_id`` (``priority``: a failover, goes first, no bound).

        Raises :class:`ApiError`: 404 MODEL_NOT_FOUND, 503 QUEUE_FULL / NO_WORKER_AVAILABLE,
        504 WORKER_START_TIMEOUT, 499 REQUEST_CANCELLED.
        """
        excluded = frozenset(exclude)
        self.dispatch(model_id)
        lease = self._take(model_id, excluded)
        if lease is not None:
            return lease

        waits_for_start = False
        if not self.registry.routable_workers(model_id, excluded):
            if self.spawning(model_id) or self.registry.loading_workers(model_id):
                waits_for_start = True
            elif self.registry.spawn_candidates(model_id):
                self._start_spawn(model_id)
                waits_for_start = True
            elif self.registry.knows_model(model_id):
                reason = (
                    "its workers failed for this request and no online hive can start another one"
                    if excluded
                    else "no online hive runs it or can start it"
                )
                raise no_worker_available(model_id, reason)
            else:
                raise model_not_found(model_id, self.registry.models())

        queue = self._queues.setdefault(model_id, deque())
        if not priority and len(queue) >= self.queue_max:
            raise ApiError(
                503,
                ErrorCode.QUEUE_FULL,
                f"All workers of model '{model_id}' are busy and {len(queue)} requests are already "
                f"waiting (queue_max={self.queue_max}); retry later.",
                details={"model": model_id, "queue_max": self.queue_max, "waiting": len(queue)},
                headers={"Retry-After": "1"},
            )
        waiter = _Waiter(request_id, model_id, excluded, asyncio.get_running_loop().create_future())
        if priority:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
        timeout = self.queue_timeout_s + (self.loading_timeout_s if waits_for_start else 0.0)
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        except BaseException:
            # The caller is cancelled (client gone): leave the queue, give back a lease just handed over.
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                waiter.future.result().release()
            self._forget(queue, waiter)
            raise
        if not waiter.future.done():
            self._forget(queue, waiter)
        if waiter.future.cancelled():
            if self.spawning(model_id) or self.registry.loading_workers(model_id):
                raise self._start_timeout(model_id)
            raise no_worker_available(
                model_id,
                f"every worker stayed busy for queue_timeout_s={self.queue_timeout_s:g} s",
                {"waited_s": round(timeout, 3)},
            )
        return waiter.future.result()

    def _forget(self, queue: deque[_Waiter], waiter: _Waiter) -> None:
        if not waiter.future.done():
            waiter.future.cancel()
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue and self._queues.get(waiter.model_id) is queue:
            del self._queues[waiter.model_id]

    def cancel_waiting(self, request_id: str) -> bool:
        """Take a waiting request out of its queue (it fails with REQUEST_CANCELLED)."""
        for queue in list(self._queues.values()):
            for waiter in queue:
                if waiter.request_id == request_id and not waiter.future.done():
                    waiter.future.set_exception(request_cancelled(request_id))
                    self._forget(queue, waiter)
                    return True
        return False

    def _fail_waiters(self, model_id: str, error: ApiError) -> None:
        queue = self._queues.pop(model_id, deque())
        for waiter in queue:
            if not waiter.future.done():
                waiter.future.set_exception(error)

    # ------------------------------------------------------------------ worker start

    def _start_timeout(self, model_id: str, details: dict[str, Any] | None = None) -> ApiError:
        return ApiError(
            504,
            ErrorCode.WORKER_START_TIMEOUT,
            f"A worker for model '{model_id}' did not become ready within "
            f"loading_timeout_s={self.loading_timeout_s:g} s.",
            details={"model": model_id, **(details or {})},
        )

    def _start_spawn(self, model_id: str) -> None:
        task = asyncio.create_task(self._spawn(model_id), name=f"spawn:{model_id}")
        self._spawns[model_id] = task

        def _done(t: asyncio.Task[None]) -> None:
            self._spawns.pop(model_id, None)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                error = (
                    exc
                    if isinstance(exc, ApiError)
                    else no_worker_available(model_id, f"starting a worker failed: {exc}")
                )
                log.warning("starting a worker for %s failed: %s", model_id, error.message)
                if not self.registry.routable_workers(model_id):
                    self._fail_waiters(model_id, error)
            self.dispatch(model_id)

        task.add_done_callback(_done)

    async def _spawn(self, model_id: str) -> None:
        refusals: list[dict[str, Any]] = []
        started: WorkerInfo | None = None
        hive_url = ""
        for hive in self.registry.spawn_candidates(model_id):
            hive_url = hive.heartbeat.url
            try:
                started = await self.spawner.spawn_worker(hive_url, SpawnRequest(model_id=model_id))
                break
            except ApiError as exc:
                refusals.append({"hive_id": hive.heartbeat.hive_id, "status": exc.status, "code": exc.code,
                                 "message": exc.message})
            except httpx.HTTPError as exc:
                refusals.append({"hive_id": hive.heartbeat.hive_id, "status": None, "code": ErrorCode.HIVE_UNREACHABLE,
                                 "message": f"{type(exc).__name__}: {exc}"})
            except ValueError as exc:  # not JSON, or not a WorkerInfo: that is no hive of ours talking
                refusals.append({"hive_id": hive.heartbeat.hive_id, "status": None, "code": ErrorCode.HIVE_UNREACHABLE,
                                 "message": f"the hive answered malformed JSON ({type(exc).__name__})"})
        if started is None:
            summary = "; ".join(f"{r['hive_id']}: {r['code']} ({r['message']})" for r in refusals)
            raise no_worker_available(
                model_id, f"no hive could start a worker ({summary or 'no online hive holds it'})",
                {"hives": refusals},
            )
        log.info("hive %s is starting worker %s for %s", started.hive_id, started.worker_id, model_id)
        self.registry.upsert_worker(started)
        deadline = self._clock() + self.loading_timeout_s
        last = started
        while True:
            seen = self.registry.worker(started.worker_id)
            if seen is not None and seen.info.state in (WorkerState.IDLE, WorkerState.BUSY):
                self.dispatch(model_id)
                return
            try:
                for info in await self.spawner.list_workers(hive_url):
                    if info.worker_id == started.worker_id:
                        last = info
                        self.registry.upsert_worker(info)
            except (ApiError, httpx.HTTPError, ValueError) as exc:
                log.debug("polling hive %s failed: %s", hive_url, exc)
            if last.state in (WorkerState.IDLE, WorkerState.BUSY):
                self.dispatch(model_id)
                return
            if last.state in (WorkerState.CRASHED, WorkerState.STOPPED):
                raise spawn_failed(model_id, last)
            if self._clock() >= deadline:
                raise self._start_timeout(
                    model_id,
                    {"worker_id": last.worker_id, "state": str(last.state), "last_error": last.last_error},
                )
            await asyncio.sleep(self.poll_interval_s)
