"""One relayed request on one worker: its slot, its open response, its bytes; how a broken stream reads.

A :class:`Generation` holds a worker slot (a :class:`~rbee_runtime.queen.scheduler.Lease`) from the
moment it is created to :meth:`Generation.close`, which cancels an unfinished generation on its worker,
closes the response and gives the slot back. A stream is read as bytes: :class:`~rbee_runtime.common.relay.
EndScanner` cuts it into whole SSE events for the client and the worker's internal end event, and a stream
read to its end leaves its connection in the pool for the next request. A stream that breaks, ends early
or falls silent for longer than ``request_timeout_s`` raises :class:`WorkerLostError`; a worker's error
answer of a ``stream=false`` request raises :class:`WorkerReplyError`. What either means for the request is
decided in :mod:`rbee_runtime.queen.failures`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio

from rbee_runtime.common.contracts import ErrorEvent
from rbee_runtime.common.relay import EndScanner, MalformedEndError, RelayHeaders
from rbee_runtime.queen.clients import WorkerClient
from rbee_runtime.queen.scheduler import Lease
from rbee_runtime.queen.worker_http import WorkerAnswer, WorkerHttpError, WorkerSilentError

#: Seconds the rest of a finished stream (its ``[DONE]``) may take to arrive before the connection is dropped.
_DRAIN_S = 2.0


@dataclass(frozen=True)
class Relay:
    """What the queen sends a worker for one request: the client's body, unchanged, and the relay headers."""

    path: str
    body: bytes
    headers: RelayHeaders
    stream: bool
    #: Chat streams open with one chunk that is not a token (the assistant's role).
    chat: bool


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
    """A worker ended a generation with an error (its own verdict, answered as it is)."""

    def __init__(self, worker_id: str, event: ErrorEvent) -> None:
        super().__init__(f"worker {worker_id}: {event.code}: {event.message}")
        self.worker_id = worker_id
        self.event = event


def silence_reason(silent_s: float | None) -> str:
    """How a request timeout reads in errors and logs."""
    if silent_s is None:
        return "it sent nothing for longer than request_timeout_s"
    return f"it sent nothing for {silent_s:g} s (request_timeout_s)"


class Generation:
    """A relayed request ``request_id`` on the worker of ``lease``; open it, read it, close it."""

    def __init__(
        self, request_id: str, lease: Lease, workers: WorkerClient, cancelled: Callable[[], bool]
    ) -> None:
        self.request_id = request_id
        self.lease = lease
        self._workers = workers
        self._cancelled = cancelled
        self._answer: WorkerAnswer | None = None
        self.scanner = EndScanner()
        #: The first whole events of a stream, read by :meth:`open` (given first by :meth:`events`).
        self.head = b""
        self.finished = False
        self.lost = False
        self._closed = False

    @property
    def worker_id(self) -> str:
        """The worker running it."""
        return self.lease.worker_id

    async def open(self, relay: Relay) -> None:
        """Send the request; for a stream, read its first whole event (into :attr:`head`).

        Raises what :meth:`WorkerClient.open_completion` raises, and :class:`WorkerLostError`.
        """
        self._answer = await self._workers.open_completion(self.lease.url, self.lease.hive_id, relay.path,
                                                           relay.body, relay.headers.as_headers())  # fmt: skip
        if relay.stream:
            while not self.head and not self.finished:
                self.head = self._cut(await self._read())

    def lose(self, reason: str, *, timed_out: bool = False, silent_s: float | None = None) -> WorkerLostError:
        """The error of a lost worker (the generation is marked lost: no cancel is sent on close)."""
        self.lost = True
        return WorkerLostError(self.worker_id, reason, timed_out=timed_out, silent_s=silent_s)

    async def _read(self, at_end_ok: bool = False) -> bytes:
        """The next bytes of the response (b"" at its end, when ``at_end_ok``)."""
        assert self._answer is not None
        try:
            data = await self._answer.read()
        except WorkerSilentError as exc:
            raise self.lose(silence_reason(exc.silent_s), timed_out=True, silent_s=exc.silent_s) from exc
        except WorkerHttpError as exc:
            raise self.lose(f"{type(exc).__name__}: {exc}") from exc
        if not data and not at_end_ok:
            raise self.lose("the stream ended without an end event")
        return data

    def _cut(self, data: bytes) -> bytes:
        try:
            out = self.scanner.feed(data)
        except MalformedEndError as exc:
            raise self.lose(str(exc)) from exc
        self.finished = self.scanner.end is not None
        return out

    async def events(self) -> AsyncIterator[bytes]:
        """Whole SSE events for the client (the head first) up to the end event; then the stream's rest is read."""
        if self.head:
            yield self.head
        while not self.finished:
            out = self._cut(await self._read())
            if out:
                yield out
        await self._drain()

    async def _drain(self) -> None:
        """Read what follows the end event (``[DONE]``), so the connection goes back to the pool."""
        with anyio.move_on_after(_DRAIN_S):
            try:
                while await self._read(at_end_ok=True):
                    pass
            except WorkerLostError:
                self.lost = False  # the request was complete; only the connection is not reused

    async def whole(self) -> bytes:
        """A ``stream=false`` answer: the worker's JSON, its keep-alive spaces stripped."""
        parts: list[bytes] = []
        while data := await self._read(at_end_ok=True):
            parts.append(data)
        self.finished = True
        return b"".join(parts).lstrip()

    async def close(self) -> None:
        """Stop the response (cancelling it on the worker if unfinished) and give the slot back (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                if self._answer is not None:
                    if not self.finished and not self.lost and not self._cancelled():
                        with anyio.move_on_after(3):
                            await self._workers.cancel(self.lease.url, self.request_id)
                    self._answer.close()
        finally:
            self.lease.release()
