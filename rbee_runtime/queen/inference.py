"""Run one OpenAI request on the workers: acquire a slot, stream, fail over, cancel.

Before the first token a failure (unreachable worker, worker refusing with 503, stream broken) is
retried on another worker, up to ``max_failover_attempts`` times; a ``stream=false`` request may
also be retried after that, since nothing was sent yet. A streamed request that loses its worker
after the first token ends with an error chunk (``WORKER_FAILED``, or ``WORKER_TIMEOUT`` when the
worker stayed silent longer than ``request_timeout_s``). Cancelling (``DELETE /v1/requests/{id}`` or the
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
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError, error_body
from rbee_runtime.queen.clients import DONE, WorkerClient, WorkerEvent, parse_worker_line
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.openai_format import SSE_DONE, Formatter, sse
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Lease, Scheduler, no_worker_available, request_cancelled

log = logging.getLogger(__name__)

# Worker error codes that are the client's fault (anything else is a 502 from the queen).
_CLIENT_ERROR_CODES: dict[str, int] = {
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorCode.REQUEST_ID_IN_USE: 409,
}
_RETRYABLE_REFUSALS = {ErrorCode.ALL_SLOTS_BUSY, ErrorCode.WORKER_LOADING, ErrorCode.WORKER_DRAINING}


class WorkerLostError(Exception):
    """A worker's stream broke (or ended, or fell silent) before its end event."""

    def __init__(self, worker_id: str, reason: str, *, timed_out: bool = False, silent_s: float | None = None) -> None:
        super().__init__(f"worker {worker_id}: {reason}")
        self.worker_id = worker_id
        self.reason = reason
        #: True when the worker stayed silent longer than the request timeout (``silent_s``, when known).
        self.timed_out = timed_out
        self.silent_s = silent_s


def read_timeout_s(request: httpx.Request) -> float | None:
    """The read timeout a request was sent with (httpx keeps it in the request's extensions)."""
    timeout = request.extensions.get("timeout")
    value = timeout.get("read") if isinstance(timeout, dict) else None
    return float(value) if isinstance(value, int | float) else None


def silence_reason(silent_s: float | None) -> str:
    """How a request timeout reads in errors and logs."""
    if silent_s is None:
        return "it sent nothing for longer than request_timeout_s"
    return f"it sent nothing for {silent_s:g} s (request_timeout_s)"


def worker_timeout(request_id: str, failures: list[str], silent_s: float | None) -> ApiError:
    """504 when the last worker tried stayed silent longer than ``request_timeout_s`` before the first token."""
    return ApiError(
        504,
        ErrorCode.WORKER_TIMEOUT,
        f"The request {request_id} timed out: {silence_reason(silent_s)} before the first token "
        f"({'; '.join(failures)}).",
        details={"request_id": request_id, "request_timeout_s": silent_s, "failures": failures},
    )


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
    #: The last failure was a worker silent for longer than the request timeout (``silent_s``).
    last_failure_timed_out: bool = False
    silent_s: float | None = None


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
            except httpx.ReadTimeout as exc:
                self.lost = True
                silent_s = read_timeout_s(self.response.request)
                raise WorkerLostError(
                    self.lease.worker_id, silence_reason(silent_s), timed_out=True, silent_s=silent_s
                ) from exc
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
        """Track a new request; 409 ``REQUEST_ID_IN_USE`` when a request with that id is queued or running."""
        if request_id in self.jobs:
            raise ApiError(
                409,
                ErrorCode.REQUEST_ID_IN_USE,
                f"A request with id {request_id!r} is already queued or running; choose another X-Request-Id "
                f"(or cancel that one with DELETE /v1/requests/{request_id}).",
                details={"request_id": request_id},
            )
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
        if job.last_failure_timed_out:
            return worker_timeout(job.request_id, job.failures, job.silent_s)
        return no_worker_available(
            job.model_id,
            f"the request failed on {job.attempts} worker(s): {'; '.join(job.failures)}",
            {"attempts": job.attempts, "failures": job.failures},
        )

    def _worker_failed(self, job: Job, worker_id: str, reason: str, *, silent_s: float | None = None,
                       timed_out: bool = False) -> None:
        log.warning("request %s: worker %s failed (%s)", job.request_id, worker_id, reason)
        job.last_failure_timed_out = timed_out
        if timed_out:
            job.silent_s = silent_s
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
                        job.last_failure_timed_out = False
                    if self._can_retry(job):
                        await asyncio.sleep(0.1 * job.attempts)
                        continue
                    raise self._give_up(job) from exc
                raise
            except httpx.ReadTimeout as exc:  # connected, but no answer within request_timeout_s
                lease.release()
                silent_s = read_timeout_s(exc.request)
                self._worker_failed(job, lease.worker_id, silence_reason(silent_s), silent_s=silent_s, timed_out=True)
                if self._can_retry(job):
                    continue
                raise self._give_up(job) from exc
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
                what = exc.reason if exc.timed_out else f"died before the first token ({exc.reason})"
                self._worker_failed(job, lease.worker_id, what, silent_s=exc.silent_s, timed_out=exc.timed_out)
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
                what = exc.reason if exc.timed_out else f"died during generation ({exc.reason})"
                self._worker_failed(job, exc.worker_id, what, silent_s=exc.silent_s, timed_out=exc.timed_out)
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
            if exc.timed_out:
                yield sse(error_body(
                    ErrorCode.WORKER_TIMEOUT,
                    f"The worker {exc.worker_id} timed out after {tokens} token(s): {exc.reason}; "
                    "the request was stopped and the output is incomplete.",
                    {"worker_id": exc.worker_id, "tokens": tokens, "request_timeout_s": exc.silent_s},
                    status=504,
                ))
            else:
                yield sse(error_body(
                    ErrorCode.WORKER_FAILED,
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
