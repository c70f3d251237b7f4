"""What one request may carry, and how long a peer may stall: the bounds every rbee listener applies.

- Field limits of the wire contracts (:data:`MAX_TEXT_CHARS` and friends), used by
  :mod:`rbee_runtime.common.contracts` and the queen's OpenAI models.
- :class:`BodyLimit`: an ASGI middleware refusing a request body larger than a bound (413
  ``PAYLOAD_TOO_LARGE``), with or without ``Content-Length`` (chunked bodies are counted as they arrive).
- :class:`WriteTimeout`: an ASGI middleware ending a response whose client stopped reading: a write that
  makes no progress for ``write_timeout_s`` stops the application (a stream's generation is cancelled,
  its slot freed) and the connection is closed; one timer per response, not one per write.

:func:`install_limits` adds both to an app (one line per service).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import error_body

log = logging.getLogger(__name__)

MiB = 1 << 20

#: Largest request body of the queen and of a worker (an OpenAI request, a heartbeat, a generate request).
MAX_BODY_BYTES = 4 * MiB
#: Largest request body of the hive by default (its requests are small; a path may have its own bound).
HIVE_MAX_BODY_BYTES = 1 * MiB

#: Most characters of a prompt, and of all the messages of a chat together.
MAX_TEXT_CHARS = 1_000_000
#: Most messages of a chat request (and text parts of one message).
MAX_MESSAGES = 2048
#: Most stop sequences, and most characters of one.
MAX_STOP = 4
MAX_STOP_CHARS = 256
#: Most tokens one request may ask for.
MAX_TOKENS = 8192
#: Most characters of a model id, and of other short identifiers and labels (the OpenAI ``user``).
MAX_ID_CHARS = 256
#: Most ``logit_bias`` entries, ``tools`` of a chat request, and ``top_logprobs`` (OpenAI's bounds).
MAX_LOGIT_BIAS = 300
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20
#: Most texts of one embeddings request.
MAX_EMBEDDING_INPUTS = 2048
#: Most workers (and models) one heartbeat may list.
MAX_HEARTBEAT_WORKERS = 1024
MAX_HEARTBEAT_MODELS = 4096

#: Seconds a write to a client may make no progress before its response is abandoned.
WRITE_TIMEOUT_S = 30.0
#: Environment variable overriding :data:`WRITE_TIMEOUT_S` (seconds; tests use a short one).
WRITE_TIMEOUT_ENV = "RBEE_WRITE_TIMEOUT_S"


def write_timeout_s() -> float:
    """The write timeout: ``$RBEE_WRITE_TIMEOUT_S`` when set to a positive number, else :data:`WRITE_TIMEOUT_S`."""
    raw = os.environ.get(WRITE_TIMEOUT_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return WRITE_TIMEOUT_S
    return value if 0 < value < float("inf") else WRITE_TIMEOUT_S


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


class BodyTooLarge(HTTPException):
    """A request body over its bound (raised by the bounded ``receive``; answered 413 ``PAYLOAD_TOO_LARGE``).

    An ``HTTPException``, so a framework that wraps what ``receive`` raised (FastAPI's body parsing) lets it
    through to the app's handler for it (:func:`install_limits`).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {_size(limit)}, the most this endpoint takes; "
                              "send a smaller request.")  # fmt: skip
        self.limit = limit

    def response(self) -> JSONResponse:
        """The 413 answer, in the shared error envelope (the server discards the rest of the body)."""
        body = error_body(ErrorCode.PAYLOAD_TOO_LARGE, str(self.detail), {"max_bytes": self.limit}, status=413)
        return JSONResponse(body, status_code=413)


class BodyLimit:
    """Refuse (413 ``PAYLOAD_TOO_LARGE``) a request body over ``max_bytes`` (``per_path``: bounds of exact paths).

    A ``Content-Length`` over the bound is refused before anything is read; a body without one (chunked)
    is counted as it arrives, and ``receive`` raises :class:`BodyTooLarge` once it passes the bound.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await BodyTooLarge(limit).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except BodyTooLarge as exc:  # an app without the handler of install_limits
            if started:
                raise
            await exc.response()(scope, receive, send)


async def _body_too_large(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTooLarge)
    return exc.response()


class _ClientStalledError(Exception):
    """A write to the client made no progress for the write timeout."""


class _SendWatch:
    """When the response's current ``send`` started (None between sends) and the task waiting in it, and
    one timer checking them.

    The timer is armed once per response and re-armed at the earliest moment a send could have run out,
    so a send that does not block costs a clock read and a few assignments. A send still waiting
    ``timeout_s`` after it started is cancelled once, which :meth:`send` turns into
    :class:`_ClientStalledError` (an exception, not a cancellation: the application's cleanup may await).
    """

    def __init__(self, send: Send, timeout_s: float) -> None:
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._clock = self._loop.time
        self.timeout_s = timeout_s
        self._since: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self.stalled = False
        self._timer = self._loop.call_later(timeout_s, self._check)

    async def send(self, message: Message) -> None:
        self._since, self._task = self._clock(), asyncio.current_task()
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if not self.stalled or self._task is None:
                raise
            self._task.uncancel()
            raise _ClientStalledError from None
        finally:
            self._since = self._task = None

    def _check(self) -> None:
        since, now = self._since, self._clock()
        if since is not None and self._task is not None and now - since >= self.timeout_s:
            self.stalled = True
            self._task.cancel()
            return
        self._timer = self._loop.call_at((since if since is not None else now) + self.timeout_s, self._check)

    def stop(self) -> None:
        self._timer.cancel()


class WriteTimeout:
    """Abandon a response whose client does not take a write within ``timeout_s`` seconds.

    The server's ``send`` waits while the connection's write buffer is full (uvicorn's flow control), so a
    client that stops reading blocks the application in ``send``. Here that wait is bounded: once it runs
    out, ``send`` raises into the application (a stream closes its generation, which frees the worker slot),
    and the response ends unfinished, which makes the server close the connection. One timer per response
    watches the sends (:class:`_SendWatch`) rather than a cancel scope around each send: the per-token path
    pays a clock read.
    """

    def __init__(self, app: ASGIApp, timeout_s: float | None = None) -> None:
        self.app = app
        self.timeout_s = write_timeout_s() if timeout_s is None else timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _SendWatch(send, self.timeout_s)
        try:
            await self.app(scope, receive, watch.send)
        except _ClientStalledError:
            client = scope.get("client")
            log.warning(
                "%s %s: the client at %s took nothing for %g s (write timeout); response abandoned",
                scope.get("method"), scope.get("path"), f"{client[0]}:{client[1]}" if client else "?", self.timeout_s,
            )
        finally:
            watch.stop()


def install_limits(app: Starlette, max_body_bytes: int = MAX_BODY_BYTES, per_path: Mapping[str, int] | None = None,
                   write_timeout: float | None = None) -> None:  # fmt: skip
    """Add :class:`BodyLimit` (and its 413 handler) and :class:`WriteTimeout` to ``app``."""
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, per_path=per_path)
    app.add_middleware(WriteTimeout, timeout_s=write_timeout)
