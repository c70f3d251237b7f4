"""One generation on one worker: its slot, its open stream, its events; how a broken stream reads.

A :class:`Generation` holds a worker slot (a :class:`~rbee_runtime.queen.scheduler.Lease`) from the
moment it is created to :meth:`Generation.close`, which cancels an unfinished generation on its worker,
closes the stream and gives the slot back. Its events are the worker's token and end events; a worker's
error event is raised (:class:`WorkerReplyError`), and so is a stream that breaks, ends early or falls
silent for longer than ``request_timeout_s`` (:class:`WorkerLostError`). What either means for the
request is decided in :mod:`rbee_runtime.queen.failures`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import httpx

from rbee_runtime.common.contracts import EndEvent, ErrorEvent, GenerateRequest, TokenEvent
from rbee_runtime.queen.clients import DONE, WorkerClient, parse_worker_line
from rbee_runtime.queen.scheduler import Lease

#: What a generation yields: tokens, then one end event.
Event = TokenEvent | EndEvent


class WorkerLostError(Exception):
    """A worker's stream broke (or ended, or fell silent) before its end event."""

    def __init__(self, worker_id: str, reason: str, *, timed_out: bool = False, silent_s: float | None = None) -> None:
        super().__init__(f"worker {worker_id}: {reason}")
        self.worker_id = worker_id
        self.reason = reason
        #: True when the worker stayed silent longer than the request timeout (``silent_s``, when known).
        self.timed_out = timed_out
        self.silent_s = silent_s


class WorkerReplyError(Exception):
    """A worker ended a generation with an error event (its own verdict, answered as it is)."""

    def __init__(self, worker_id: str, event: ErrorEvent) -> None:
        super().__init__(f"worker {worker_id}: {event.code}: {event.message}")
        self.worker_id = worker_id
        self.event = event


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


class Generation:
    """A generation of ``request_id`` on the worker of ``lease``; open it, read it, close it."""

    def __init__(
        self, request_id: str, lease: Lease, workers: WorkerClient, cancelled: Callable[[], bool]
    ) -> None:
        self.request_id = request_id
        self.lease = lease
        self._workers = workers
        self._cancelled = cancelled
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        #: The first event, read by :meth:`open` (given again first by :meth:`events`).
        self.first: Event | None = None
        self.finished = False
        self.lost = False
        self._closed = False

    @property
    def worker_id(self) -> str:
        """The worker running it."""
        return self.lease.worker_id

    async def open(self, request: GenerateRequest) -> Event:
        """Send ``POST {worker}/v1/generate`` and read the first event.

        Raises what :meth:`WorkerClient.open_generate` raises, :class:`WorkerLostError` and
        :class:`WorkerReplyError`.
        """
        self._response = await self._workers.open_generate(self.lease.url, request)
        self._lines = self._response.aiter_lines()
        self.first = await self._next()
        return self.first

    def _lose(self, reason: str, *, timed_out: bool = False, silent_s: float | None = None) -> WorkerLostError:
        self.lost = True
        return WorkerLostError(self.worker_id, reason, timed_out=timed_out, silent_s=silent_s)

    async def _next(self) -> Event:
        assert self._response is not None and self._lines is not None
        while True:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                raise self._lose("the stream ended without an end event") from None
            except httpx.ReadTimeout as exc:
                silent_s = read_timeout_s(self._response.request)
                raise self._lose(silence_reason(silent_s), timed_out=True, silent_s=silent_s) from exc
            except httpx.HTTPError as exc:
                raise self._lose(f"{type(exc).__name__}: {exc}") from exc
            event = parse_worker_line(line)
            if event is None:
                continue
            if event == DONE:
                raise self._lose("the stream ended without an end event")
            assert not isinstance(event, str)
            if isinstance(event, ErrorEvent):
                self.finished = True
                raise WorkerReplyError(self.worker_id, event)
            if isinstance(event, EndEvent):
                self.finished = True
            return event

    async def events(self) -> AsyncIterator[Event]:
        """The first event, then the rest up to the end event (stops early once the request is cancelled)."""
        if self.first is not None:
            yield self.first
            if self.finished:
                return
        while not self._cancelled():
            event = await self._next()
            yield event
            if self.finished:
                return

    async def close(self) -> None:
        """Stop the stream (cancelling it on the worker if unfinished) and give the slot back (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                if self._response is not None:
                    if not self.finished and not self.lost and not self._cancelled():
                        with anyio.move_on_after(3):
                            await self._workers.cancel(self.lease.url, self.request_id)
                    await self._response.aclose()
        finally:
            self.lease.release()
