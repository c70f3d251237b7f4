"""Run one OpenAI request on the workers: track it, acquire a slot, fail over, stream, cancel.

Before the first token a failure (unreachable worker, worker refusing with 503, stream broken) is
retried on another worker, up to ``max_failover_attempts`` times; a ``stream=false`` request may
also be retried after that, since nothing was sent yet. A streamed request that loses its worker
after the first token ends with an error chunk (``WORKER_FAILED``, or ``WORKER_TIMEOUT`` when the
worker stayed silent longer than ``request_timeout_s``). What a failure means is decided once, by
:func:`rbee_runtime.queen.failures.classify`, and applied once, by :meth:`InferenceService.settle`.
Cancelling (``DELETE /v1/requests/{id}`` or the client going away) takes the request out of its queue
or sends the cancel to its worker.

The life of a request (tracked from arrival to its last byte, counted once) is owned by
:class:`rbee_runtime.queen.run.RequestRun`, which calls :meth:`InferenceService.tracked`,
:meth:`~InferenceService.first_event` and :meth:`~InferenceService.stream` or :meth:`~InferenceService.complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field

from rbee_runtime.common.contracts import EndEvent, GenerateRequest, TokenEvent
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.clients import WorkerClient
from rbee_runtime.queen.failures import Failure, Outcome, classify, worker_timeout
from rbee_runtime.queen.generation import Generation
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.openai_format import SSE_DONE, Formatter, sse
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Lease, Scheduler, no_worker_available, request_cancelled

log = logging.getLogger(__name__)


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
    #: The last failure was a worker silent for longer than the request timeout (``silent_s``).
    last_failure_timed_out: bool = False
    silent_s: float | None = None
    #: The first token arrived (time to first token is observed once per request).
    got_first_token: bool = False
    #: Tokens delivered to the client (counted in ``rbee_queen_tokens_generated_total`` when the job ends).
    tokens_out: int = 0
    #: The model's metrics label (:meth:`QueenMetrics.model_label`: bounded, whatever the client asks for).
    label: str = "unknown"


class InferenceService:
    """Runs jobs on workers; the table of running jobs, for cancellation."""

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

    @contextlib.contextmanager
    def tracked(self, request_id: str, model_id: str, generate: GenerateRequest) -> Iterator[Job]:
        """A request's time in the job table: its begin and its end, and its tokens counted at the end.

        Raises 409 ``REQUEST_ID_IN_USE`` when a request with that id is queued or running.
        """
        if request_id in self.jobs:
            raise ApiError(
                409,
                ErrorCode.REQUEST_ID_IN_USE,
                f"A request with id {request_id!r} is already queued or running; choose another X-Request-Id "
                f"(or cancel that one with DELETE /v1/requests/{request_id}).",
                details={"request_id": request_id},
            )
        label = self.metrics.model_label(model_id, self.registry.knows_model(model_id))
        job = Job(request_id=request_id, model_id=model_id, generate=generate, started_at=self._clock(), label=label)
        self.jobs[request_id] = job
        try:
            yield job
        finally:
            del self.jobs[request_id]
            self.metrics.tokens.labels(model=job.label).inc(job.tokens_out)

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

    # ------------------------------------------------------------------ failures

    def settle(self, job: Job, failure: Failure) -> ApiError | None:
        """Apply a classified failure to its request: None to retry on another worker, else the error that ends it."""
        if failure.quarantine:
            log.warning("request %s: worker %s failed (%s)", job.request_id, failure.worker_id, failure.reason)
            self.registry.quarantine(failure.worker_id, self.quarantine_s)
        if failure.outcome is not Outcome.RETRY:
            return failure.error
        job.failures.append(f"{failure.worker_id}: {failure.reason}")
        job.last_failure_timed_out = failure.timed_out
        if failure.timed_out:
            job.silent_s = failure.silent_s
        if failure.quarantine or failure.exclude:
            job.exclude.add(failure.worker_id)
        if job.attempts <= self.max_failover_attempts and not job.cancelled:
            self.metrics.failovers.labels(model=job.label).inc()
            return None
        if job.last_failure_timed_out:
            return worker_timeout(job.request_id, job.failures, job.silent_s)
        return no_worker_available(
            job.model_id,
            f"the request failed on {job.attempts} worker(s): {'; '.join(job.failures)}",
            {"attempts": job.attempts, "failures": job.failures},
        )

    async def close(self, job: Job, generation: Generation) -> None:
        """Close a generation (its slot given back, an unfinished one cancelled on its worker)."""
        await generation.close()
        if job.lease is generation.lease:
            job.lease = None

    # ------------------------------------------------------------------ running

    async def first_event(self, job: Job) -> Generation:
        """A generation on a worker slot whose first event is read, failing over on failures before it."""
        while True:
            if job.cancelled:
                raise request_cancelled(job.request_id)
            lease = await self.scheduler.acquire(job.model_id, job.request_id, job.exclude, priority=job.attempts > 0)
            job.attempts += 1
            job.lease = lease
            generation = Generation(job.request_id, lease, self.workers, lambda: job.cancelled)
            if job.cancelled:
                await self.close(job, generation)
                raise request_cancelled(job.request_id)
            try:
                first = await generation.open(job.generate)
            except BaseException as exc:
                failure = classify(exc, lease.worker_id, "first_event")
                error = None if failure is None else self.settle(job, failure)
                await self.close(job, generation)
                if failure is None or error is exc:
                    raise
                if error is not None:
                    raise error from exc
                if failure.backoff:
                    await asyncio.sleep(0.1 * job.attempts)
                continue
            if isinstance(first, TokenEvent) and not job.got_first_token:
                job.got_first_token = True
                self.metrics.ttft.labels(model=job.label).observe(max(0.0, self._clock() - job.started_at))
            return generation

    async def complete(self, job: Job) -> tuple[str, EndEvent]:
        """Run a ``stream=false`` request to its end (retrying from scratch if its worker dies)."""
        while True:
            generation = await self.first_event(job)
            parts: list[str] = []
            end: EndEvent | None = None
            try:
                async for event in generation.events():
                    if isinstance(event, TokenEvent):
                        parts.append(event.text)
                    else:
                        end = event
            except BaseException as exc:
                failure = classify(exc, generation.worker_id, "generating")
                error = None if failure is None else self.settle(job, failure)
                if failure is None:
                    raise
                if error is not None:
                    raise error from exc
                continue
            finally:
                await self.close(job, generation)
            if end is None or end.stop_reason == "cancelled":
                raise request_cancelled(job.request_id)
            job.tokens_out = end.tokens_out
            return "".join(parts), end

    async def stream(
        self, job: Job, generation: Generation, fmt: Formatter, include_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        """OpenAI SSE chunks of a generation whose first event is read, then ``data: [DONE]``.

        A failure after the first token ends the stream with its error chunk; the caller closes the generation.
        """
        opening = fmt.opening_chunk()
        if opening is not None:
            yield sse(opening)
        end: EndEvent | None = None
        try:
            async for event in generation.events():
                if isinstance(event, TokenEvent):
                    job.tokens_out += 1
                    yield sse(fmt.token_chunk(event.text))
                else:
                    end = event
        except Exception as exc:
            failure = classify(exc, generation.worker_id, "streaming", job.tokens_out)
            error = None if failure is None else self.settle(job, failure)
            if error is None:
                raise
            yield sse(error.body())
        else:
            if end is None or end.stop_reason == "cancelled":
                yield sse(request_cancelled(job.request_id).body())
            else:
                yield sse(fmt.final_chunk(end))
                if include_usage:
                    yield sse(fmt.usage_chunk(end))
        yield SSE_DONE
