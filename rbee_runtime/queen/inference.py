"""Run one OpenAI request on the workers: acquire a slot, stream, fail over, cancel.

Before the first token a failure (unreachable worker, worker refusing with 503, stream broken) is
retried on another worker, up to ``max_failover_attempts`` times; a ``stream=false`` request may
also be retried after that, since nothing was sent yet. A streamed request that loses its worker
after the first token ends with an error chunk. Cancelling (``DELETE /v1/requests/{id}`` or the
client going away) takes the request out of its queue or sends the cancel to its worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import httpx

from rbee_runtime.common.contracts import EndEvent, ErrorEvent, GenerateRequest, TokenEvent
from rbee_runtime.common.errors import ApiError, error_body
from rbee_runtime.queen.clients import DONE, WorkerClient, WorkerEvent, parse_worker_line
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.openai_format import SSE_DONE, Formatter, sse
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Lease, Scheduler, no_worker_available, request_cancelled

log = logging.getLogger(__name__)

# Worker error codes that are the client's fault (anything else is a 502 from the queen).
_CLIENT_ERROR_CODES = {"INVALID_REQUEST": 422, "CONTEXT_LENGTH_EXCEEDED": 400, "REQUEST_ID_IN_USE": 409}
_RETRYABLE_REFUSALS = {"ALL_SLOTS_BUSY", "WORKER_LOADING", "WORKER_DRAINING"}


class WorkerLostError(Exception):
    """A worker's stream broke (or ended) before its end event."""

    def __init__(self, worker_id: str, reason: str) -> None:
        super().__init__(f"worker {worker_id}: {reason}")
        self.worker_id = worker_id
        self.reason = reason


def worker_error(event: ErrorEvent, worker_id: str) -> ApiError:
    """The API error for a worker's error event."""
    status = _CLIENT_ERROR_CODES.get(event.code, 502)
    return ApiError(status, event.code, event.message, details={"worker_id": worker_id})


@dataclass(eq=False)
class Job:
    """One client request as the queen tracks it (for failover and ``DELETE /v1/requests/{id}``)."""

    request_id: str
    model_id: str
    generate: GenerateRequest
    started_at: float
    cancelled: bool = False
    attempts: int = 0
    exclude: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    lease: Lease | None = None


class Generation:
    """A generation running on one worker: its slot, its open stream, its first event."""

    def __init__(self, job: Job, lease: Lease, response: httpx.Response, workers: WorkerClient) -> None:
        self.job = job
        self.lease = lease
        self.response = response
        self._workers = workers
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self.first: WorkerEvent | None = None
        self.finished = False
        self.lost = False
        self._closed = False

    async def next_event(self) -> WorkerEvent:
        """The next event of the stream; :class:`WorkerLostError` when it breaks before the end event."""
        while True:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                self.lost = True
                raise WorkerLostError(self.lease.worker_id, "the stream ended without an end event") from None
            except httpx.HTTPError as exc:
                self.lost = True
                raise WorkerLostError(self.lease.worker_id, f"{type(exc).__name__}: {exc}") from exc
            event = parse_worker_line(line)
            if event is None:
                continue
            if event == DONE:
                self.lost = True
                raise WorkerLostError(self.lease.worker_id, "the stream ended without an end event")
            assert not isinstance(event, str)
            if isinstance(event, EndEvent | ErrorEvent):
                self.finished = True
            return event

    async def events(self) -> AsyncIterator[WorkerEvent]:
        """The first event, then the rest up to the terminal one (stops early once cancelled)."""
        if self.first is not None:
            yield self.first
            if self.finished:
                return
        while not self.job.cancelled:
            event = await self.next_event()
            yield event
            if self.finished:
                return

    async def close(self) -> None:
        """Stop the stream (cancelling it on the worker if unfinished) and give the slot back."""
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                if not self.finished and not self.lost and not self.job.cancelled:
                    with anyio.move_on_after(3):
                        await self._workers.cancel(self.lease.url, self.job.request_id)
                await self.response.aclose()
        finally:
            self.lease.release()
            if self.job.lease is self.lease:
                self.job.lease = None


class InferenceService:
    """Runs jobs on workers; the registry of running jobs for cancellation."""

    def __init__(
        self,
        registry: Registry,
        scheduler: Scheduler,
        workers: WorkerClient,
        metrics: QueenMetrics,
        *,
        max_failover_attempts: int,
        quarantine_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.workers = workers
        self.metrics = metrics
        self.max_failover_attempts = max_failover_attempts
        self.quarantine_s = quarantine_s
        self._clock = clock
        self.jobs: dict[str, Job] = {}

    # ------------------------------------------------------------------ jobs

    def begin(self, request_id: str, model_id: str, generate: GenerateRequest) -> Job:
        """Track a new request."""
        job = Job(request_id=request_id, model_id=model_id, generate=generate, started_at=self._clock())
        self.jobs[request_id] = job
        return job

    def end(self, job: Job) -> None:
        """Stop tracking a request."""
        if self.jobs.get(job.request_id) is job:
            del self.jobs[job.request_id]

    async def cancel(self, request_id: str) -> None:
        """Cancel a request wherever it is (idempotent; unknown ids are ignored)."""
        job = self.jobs.get(request_id)
        if job is None or job.cancelled:
            return
        job.cancelled = True
        self.scheduler.cancel_waiting(request_id)
        lease = job.lease
        if lease is not None:
            log.info("cancelling %s on worker %s", request_id, lease.worker_id)
            await self.workers.cancel(lease.url, request_id)

    # ------------------------------------------------------------------ running

    def _give_up(self, job: Job) -> ApiError:
        return no_worker_available(
            job.model_id,
            f"the request failed on {job.attempts} worker(s): {'; '.join(job.failures)}",
            {"attempts": job.attempts, "failures": job.failures},
        )

    def _worker_failed(self, job: Job, worker_id: str, reason: str) -> None:
        log.warning("request %s: worker %s failed (%s)", job.request_id, worker_id, reason)
        job.exclude.add(worker_id)
        job.failures.append(f"{worker_id}: {reason}")
        self.registry.quarantine(worker_id, self.quarantine_s)

    def _can_retry(self, job: Job) -> bool:
        if job.attempts <= self.max_failover_attempts and not job.cancelled:
            self.metrics.failovers.labels(model=job.model_id).inc()
            return True
        return False

    async def start(self, job: Job) -> Generation:
        """Get a worker slot and read until the first event, failing over on failures before it."""
        while True:
            if job.cancelled:
                raise request_cancelled(job.request_id)
            lease = await self.scheduler.acquire(
                job.model_id, job.request_id, job.exclude, priority=job.attempts > 0
            )
            job.attempts += 1
            job.lease = lease
            if job.cancelled:
                lease.release()
                raise request_cancelled(job.request_id)
            try:
                response = await self.workers.open_generate(lease.url, job.generate)
            except ApiError as exc:
                lease.release()
                if exc.code in _RETRYABLE_REFUSALS or exc.status >= 500:
                    if exc.code not in _RETRYABLE_REFUSALS:
                        self._worker_failed(job, lease.worker_id, f"{exc.code}: {exc.message}")
                    else:
                        job.failures.append(f"{lease.worker_id}: {exc.code}")
                    if self._can_retry(job):
                        await asyncio.sleep(0.1 * job.attempts)
                        continue
                    raise self._give_up(job) from exc
                raise
            except httpx.HTTPError as exc:
                lease.release()
                self._worker_failed(job, lease.worker_id, f"unreachable ({type(exc).__name__})")
                if self._can_retry(job):
                    continue
                raise self._give_up(job) from exc
            except BaseException:
                lease.release()
                raise

            generation = Generation(job, lease, response, self.workers)
            try:
                first = await generation.next_event()
            except WorkerLostError as exc:
                await generation.close()
                self._worker_failed(job, lease.worker_id, f"died before the first token ({exc.reason})")
                if self._can_retry(job):
                    continue
                raise self._give_up(job) from exc
            except BaseException:
                await generation.close()
                raise
            if isinstance(first, ErrorEvent):
                await generation.close()
                raise worker_error(first, lease.worker_id)
            if isinstance(first, TokenEvent):
                self.metrics.ttft.labels(model=job.model_id).observe(max(0.0, self._clock() - job.started_at))
            generation.first = first
            return generation

    async def complete(self, job: Job) -> tuple[str, EndEvent]:
        """Run a ``stream=false`` request to its end (retrying from scratch if its worker dies)."""
        while True:
            generation = await self.start(job)
            parts: list[str] = []
            try:
                async for event in generation.events():
                    if isinstance(event, TokenEvent):
                        parts.append(event.text)
                    elif isinstance(event, ErrorEvent):
                        raise worker_error(event, generation.lease.worker_id)
                    else:
                        if event.stop_reason == "cancelled":
                            raise request_cancelled(job.request_id)
                        self.metrics.tokens.labels(model=job.model_id).inc(event.tokens_out)
                        return "".join(parts), event
                raise request_cancelled(job.request_id)
            except WorkerLostError as exc:
                self._worker_failed(job, exc.worker_id, f"died during generation ({exc.reason})")
                if not self._can_retry(job):
                    raise self._give_up(job) from exc
            finally:
                await generation.close()

    async def stream(
        self, job: Job, generation: Generation, fmt: Formatter, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """OpenAI SSE chunks of a started generation, then ``data: [DONE]``; closes it at the end."""
        tokens = 0
        try:
            opening = fmt.opening_chunk()
            if opening is not None:
                yield sse(opening)
            ended = False
            async for event in generation.events():
                if isinstance(event, TokenEvent):
                    tokens += 1
                    yield sse(fmt.token_chunk(event.text))
                elif isinstance(event, ErrorEvent):
                    yield sse(worker_error(event, generation.lease.worker_id).body())
                    ended = True
                elif event.stop_reason == "cancelled":
                    yield sse(request_cancelled(job.request_id).body())
                    ended = True
                else:
                    yield sse(fmt.final_chunk(event))
                    if include_usage:
                        yield sse(fmt.usage_chunk(event))
                    ended = True
            if not ended:
                yield sse(request_cancelled(job.request_id).body())
            yield SSE_DONE
        except WorkerLostError as exc:
            log.warning("request %s: worker %s lost after %d tokens: %s", job.request_id, exc.worker_id,
                        tokens, exc.reason)
            self.registry.quarantine(exc.worker_id, self.quarantine_s)
            yield sse(error_body(
                "WORKER_FAILED",
                f"The worker {exc.worker_id} failed after {tokens} token(s) ({exc.reason}); "
                "the output is incomplete.",
                {"worker_id": exc.worker_id, "tokens": tokens},
                status=502,
            ))
            yield SSE_DONE
        finally:
            self.metrics.tokens.labels(model=job.model_id).inc(tokens)
            await generation.close()
            self.end(job)
