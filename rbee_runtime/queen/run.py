"""One completion request from arrival to its last byte, owned by one coroutine: :meth:`RequestRun.__call__`.

The route parses the body and hands the request over; from then on everything happens in one place,
in this order:

1. the request id (the client's ``X-Request-Id``, checked, or a new one) — on every answer;
2. the job table (:meth:`InferenceService.tracked`: 409 ``REQUEST_ID_IN_USE``; the job ends, and its tokens
   are counted, before the answer's last byte);
3. while the client is there (a disconnect cancels the request like ``DELETE /v1/requests/{id}``, and
   stops a running stream at once):
   a worker slot and the first event (:meth:`InferenceService.first_event`: queue, on-demand start,
   failover), then the worker's SSE chunks (:meth:`InferenceService.stream`) or its whole answer
   (:meth:`InferenceService.complete`), forwarded as they came;
4. one answer: the completion, or the :class:`ApiError` that ended the request as a JSON error —
   ``rbee_queen_requests_total{model,status}`` is counted once, as the answer's status is sent.
"""

from __future__ import annotations

import contextlib
import logging
import time

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rbee_runtime.common import log_context
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_requests import RelayedRequest, new_request_id
from rbee_runtime.common.relay import REQUEST_ID, RelayHeaders
from rbee_runtime.queen.generation import Relay
from rbee_runtime.queen.http_utils import watch_disconnect
from rbee_runtime.queen.inference import Job
from rbee_runtime.queen.state import QueenState

log = logging.getLogger(__name__)

_STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}

_JSON_HEADERS = [(b"content-type", b"application/json")]
_PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions", "embedding": "/v1/embeddings"}

#: A request id a client may choose (``X-Request-Id``): what the workers accept, safe in URLs and logs.
CLIENT_REQUEST_ID = REQUEST_ID


def client_request_id(request: Request) -> str | None:
    """The request id the client chose with an ``X-Request-Id`` header (None without one).

    Raises 422 ``INVALID_REQUEST`` when it is not 1-128 letters, digits, ``.``, ``_``, ``:`` or ``-``
    starting with a letter or digit (so it can be used in ``DELETE /v1/requests/{id}``).
    """
    chosen = request.headers.get("x-request-id")
    if chosen is None:
        return None
    if not CLIENT_REQUEST_ID.fullmatch(chosen):
        shown = chosen if len(chosen) <= 40 else chosen[:40] + "…"
        raise ApiError(
            422,
            ErrorCode.INVALID_REQUEST,
            "The X-Request-Id header must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with "
            f"a letter or digit (got {shown!r}); leave it out to get an id from the queen.",
            details={"fields": ["X-Request-Id"]},
        )
    return chosen


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class RequestRun(Response):
    """The ASGI answer to one completion request; its :meth:`__call__` is the request's whole life."""

    def __init__(self, state: QueenState, request: Request, body: RelayedRequest, raw: bytes) -> None:
        super().__init__()
        self.state = state
        self.request = request
        self.completion = body
        #: The client's body as it came (validated as ``body``): what the worker gets.
        self.raw = raw
        #: The metrics label: the model asked for, ``unknown`` or ``other`` (clients cannot grow the label set).
        self.label = state.metrics.model_label(body.model, state.registry.knows_model(body.model))
        self._started = False
        self._status = 0
        self._stop_streaming = anyio.CancelScope()

    async def _start(self, send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the answer's status and headers; the one place a request is counted."""
        self._started = True
        self._status = status
        self.state.metrics.requests.labels(model=self.label, status=str(status)).inc()
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service, body = self.state.inference, self.completion
        headers: dict[str, str] = {}
        last: bytes | memoryview = b""
        try:
            request_id = client_request_id(self.request) or new_request_id(body.kind)
            headers["X-Request-Id"] = request_id
            log_context.bind(request_id=request_id, model=body.model)  # this request's task: its log lines
            relay = Relay(
                path=_PATHS[body.kind], body=self.raw, stream=body.stream, chat=body.kind == "chat",
                headers=RelayHeaders(request_id, int(time.time()), self.state.config.default_max_tokens),
            )  # fmt: skip
            with service.tracked(request_id, body.model, relay) as job:
                async with watch_disconnect(receive, lambda: self._client_gone(job)):
                    if body.stream:
                        await self._stream(job, send, headers)
                    else:
                        last = await self._complete(job, send, headers)
        except ApiError as exc:
            if self._started:
                raise
            error = JSONResponse(exc.body(), status_code=exc.status, headers={**exc.headers, **headers})
            await self._start(send, error.status_code, error.raw_headers)
            last = error.body
        await send({"type": "http.response.body", "body": last, "more_body": False})
        log.debug("answered %s", self._status)

    async def _client_gone(self, job: Job) -> None:
        """Cancel the request as ``DELETE /v1/requests/{id}`` would; a running stream stops at once."""
        await self.state.inference.cancel(job.request_id)
        self._stop_streaming.cancel()

    async def _complete(self, job: Job, send: Send, headers: dict[str, str]) -> bytes:
        """``stream=false``: the worker's whole answer, then its head; its body is sent once the job ended."""
        answer = await self.state.inference.complete(job)
        head = [*_raw(headers), (b"content-length", str(len(answer)).encode()), *_JSON_HEADERS]
        await self._start(send, 200, head)
        return answer

    async def _stream(self, job: Job, send: Send, headers: dict[str, str]) -> None:
        """``stream=true``: the first event, then the head and the SSE chunks; the generation closed at the end."""
        service = self.state.inference
        generation = await service.first_event(job)
        try:
            await self._start(send, 200, _raw({**_STREAM_HEADERS, **headers}))
            chunks = service.stream(job, generation)
            with self._stop_streaming:
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await service.close(job, generation)
