"""Run one OpenAI request on the workers: track it, acquire a slot, fail over, stream, cancel.

The client's body goes to the worker unchanged and the worker's chunk bytes come back to the client
unchanged (:mod:`rbee_runtime.common.relay`); the queen reads no token, it cuts the stream at the worker's
end event and counts the tokens that event reports.

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
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rbee_runtime.common import log_context
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_chunks import SSE_DONE, sse
from rbee_runtime.queen.clients import WorkerClient
from rbee_runtime.queen.failures import Failure, Outcome, classify, reply_error, worker_timeout
from rbee_runtime.queen.generation import Generation, Relay, WorkerLostError
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Lease, Scheduler, no_worker_available, request_cancelled

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One client request as the queen tracks it (for failover and ``DELETE /v1/requests/{id}``)."""

    request_id: str
    model_id: str
    relay: Relay
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
    def tracked(self, request_id: str, model_id: str, relay: Relay) -> Iterator[Job]:
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
        job = Job(request_id=request_id, model_id=model_id, relay=relay, started_at=self._clock(), label=label)
        self.jobs[request_id] = job
        try:
            yield job
        finally:
            del self.jobs[request_id]
            self.metrics.tokens.labels(model=job.label).inc(job.tokens_out)
            self.metrics.observe_end(job.label, self._clock() - job.started_at, job.tokens_out)

    async def cancel(self, request_id: str) -> None:
        """Cancel a request wherever it is (idempotent; unknown ids are ignored)."""
        job = self.jobs.get(request_id)
        if job is None or job.cancelled:
            return
        job.cancelled = True
        self.scheduler.cancel_waiting(request_id)
        lease = job.lease
        log_context.bind(request_id=request_id, model=job.model_id, worker=lease.worker_id if lease else None)
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
        """A relayed request on a worker slot, its answer begun (a stream: its first event read), failing over
        on failures before it."""
        while True:
            if job.cancelled:
                raise request_cancelled(job.request_id)
            lease = await self.scheduler.acquire(job.model_id, job.request_id, job.exclude, priority=job.attempts > 0)
            log_context.bind(worker=lease.worker_id)  # the request's log lines name its worker from now on
            job.attempts += 1
            job.lease = lease
            generation = Generation(job.request_id, lease, self.workers, lambda: job.cancelled)
            if job.cancelled:
                await self.close(job, generation)
                raise request_cancelled(job.request_id)
            try:
                await generation.open(job.relay)
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
            if not job.got_first_token:  # a worker answers once the first token exists
                job.got_first_token = True
                self.metrics.ttft.labels(model=job.label).observe(max(0.0, self._clock() - job.started_at))
            return generation

    async def complete(self, job: Job) -> bytes:
        """Run a ``stream=false`` request to its end (retrying from scratch if its worker dies); the JSON answer."""
        while True:
            generation = await self.first_event(job)
            try:
                raw = await generation.whole()
                answer = _json_object(raw, generation)
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
            if "error" in answer:
                if job.cancelled or (answer["error"] or {}).get("code") == ErrorCode.REQUEST_CANCELLED:
                    raise request_cancelled(job.request_id)
                failure = classify(reply_error(answer, generation.worker_id), generation.worker_id, "generating")
                assert failure is not None and failure.error is not None
                raise failure.error
            usage = answer.get("usage")
            job.tokens_out = int(usage.get("completion_tokens", 0)) if isinstance(usage, dict) else 0
            return raw

    async def stream(self, job: Job, generation: Generation) -> AsyncGenerator[bytes, None]:
        """The worker's SSE chunks, as they came, then ``data: [DONE]`` (its end event kept from the client).

        A failure after the first token ends the stream with its error chunk; the caller closes the generation.
        """
        try:
            async for block in generation.events():
                yield block
        except WorkerLostError as exc:
            job.tokens_out = max(0, generation.scanner.events - job.relay.chat)  # the chat's opening chunk
            failure = classify(exc, generation.worker_id, "streaming", job.tokens_out)
            error = None if failure is None else self.settle(job, failure)
            if error is None:
                raise
            yield sse(error.body())
        else:
            end = generation.scanner.end
            job.tokens_out = end.tokens_out if end is not None else 0
        yield SSE_DONE


def _json_object(raw: bytes, generation: Generation) -> dict[str, Any]:
    """The worker's ``stream=false`` answer (one parse per request); anything but a JSON object: the worker is lost."""
    try:
        answer = json.loads(raw)
    except ValueError:
        raise generation.lose(f"the answer is not JSON: {raw[:200]!r}") from None
    if not isinstance(answer, dict):
        raise generation.lose(f"the answer is not a JSON object: {raw[:200]!r}")
    return answer
