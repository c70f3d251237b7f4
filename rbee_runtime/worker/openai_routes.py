"""The worker's OpenAI routes: ``POST /v1/completions`` and ``POST /v1/chat/completions``.

The body is validated with the queen's models (:mod:`rbee_runtime.common.openai_requests`); the queen's
relay headers (:mod:`rbee_runtime.common.relay`) give the request id, ``created`` and the default
``max_tokens``. The answer is written here, as the bytes the client receives: a failure before the first
token is an HTTP error; a stream sends, per batch of tokens the generation thread handed over
(:class:`~rbee_runtime.worker.service.Handoff`), one HTTP body chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from rbee_runtime.common import log_context
from rbee_runtime.common.bodies import parse_json
from rbee_runtime.common.contracts import EndEvent, ErrorEvent
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.internal_auth import InternalAuth
from rbee_runtime.common.limits import MAX_TOKENS
from rbee_runtime.common.openai_chunks import SSE_DONE, Formatter, formatter, request_cancelled, sse
from rbee_runtime.common.openai_requests import (
    DEFAULT_MAX_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIRequest,
    new_request_id,
)
from rbee_runtime.common.pieces import Output
from rbee_runtime.common.relay import (
    CREATED_HEADER,
    DEFAULT_MAX_TOKENS_HEADER,
    KEEPALIVE,
    RELAY_HEADER,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    RelayEnd,
    end_event,
)
from rbee_runtime.worker.embedding_routes import wrong_model_type
from rbee_runtime.worker.service import Item, Job, Terminal, WorkerService

#: Worker error codes that are the client's fault, and their status (anything else: 500 before the first
#: token, 502 in a stream, as the queen answers a worker's failure).
CLIENT_ERRORS: dict[str, int] = {ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400, ErrorCode.INPUT_REJECTED: 400}

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _int_header(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.headers.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(422, ErrorCode.INVALID_REQUEST, f"The {name} header must be an integer from {low} to {high}.",
                       details={"fields": [name]})  # fmt: skip
    return int(raw)


def _request_id(request: Request, body: OpenAIRequest) -> str:
    chosen = request.headers.get(REQUEST_ID_HEADER)
    if chosen is None:
        return new_request_id(body.kind)
    if not REQUEST_ID.fullmatch(chosen):
        raise ApiError(422, ErrorCode.INVALID_REQUEST, "The X-Request-Id header must be 1 to 128 letters, digits, "
                       "'.', '_', ':' or '-', starting with a letter or digit.", details={"fields": ["X-Request-Id"]})
    return chosen


def _json(payload: dict[str, Any]) -> bytes:
    """``payload`` as Starlette's ``JSONResponse`` writes it (the bytes the queen answered before relaying)."""
    return bytes(JSONResponse(payload).body)


def failed_before_first_token(event: ErrorEvent) -> ApiError:
    """The HTTP error of a generation that failed before its first token."""
    fields = {"fields": [event.field]} if event.field else None
    return ApiError(CLIENT_ERRORS.get(event.code, 500), event.code, event.message, details=fields, param=event.field)


def failed_in_stream(event: ErrorEvent, worker_id: str) -> ApiError:
    """The error chunk of a generation that failed after its first token (as the queen always answered it)."""
    fields = {"fields": [event.field]} if event.field else {}
    return ApiError(CLIENT_ERRORS.get(event.code, 502), event.code, event.message,
                    details={"worker_id": worker_id, **fields}, param=event.field)  # fmt: skip


class Answer:
    """One OpenAI request on this worker: the job, its formatter, and how it ends."""

    def __init__(self, service: WorkerService, job: Job, fmt: Formatter, body: OpenAIRequest, relay: bool) -> None:
        self.service = service
        self.job = job
        self.fmt = fmt
        self.body = body
        self.relay = relay
        self.pieces = 0

    def _split(self, batch: list[Item]) -> tuple[list[Output], Terminal | None]:
        last = batch[-1]
        if isinstance(last, EndEvent | ErrorEvent):
            outputs: list[Output] = batch[:-1]  # type: ignore[assignment]  # only the last item is terminal
            self.pieces += len(outputs)
            return outputs, last
        self.pieces += len(batch)
        return batch, None  # type: ignore[return-value]

    def _relay_end(self, terminal: Terminal) -> RelayEnd:
        if isinstance(terminal, ErrorEvent):
            return RelayEnd(tokens_out=self.pieces, prompt_tokens=0, stop_reason="error")
        return RelayEnd(tokens_out=terminal.tokens_out, prompt_tokens=terminal.prompt_tokens,
                        stop_reason=terminal.stop_reason)  # fmt: skip

    def _closing(self, terminal: Terminal) -> list[bytes]:
        """The chunks after the last token: finish reason (and usage), or the error; the relay's end; [DONE]."""
        parts: list[bytes] = []
        if isinstance(terminal, ErrorEvent):
            parts.append(sse(failed_in_stream(terminal, self.service.worker_id).body()))
        elif terminal.stop_reason == "cancelled":
            parts.append(sse(request_cancelled(self.job.request_id).body()))
        else:
            parts.append(sse(self.fmt.final_chunk(terminal)))
            if self.body.include_usage:
                parts.append(sse(self.fmt.usage_chunk(terminal)))
        if self.relay:
            parts.append(end_event(self._relay_end(terminal)))
        parts.append(SSE_DONE)
        return parts

    async def stream(self, first: list[Item]) -> AsyncIterator[bytes]:
        """The SSE chunks: one body chunk per batch; leaving early cancels the generation."""
        batch = first
        opening = self.fmt.opening_chunk()
        parts = [sse(opening)] if opening is not None else []
        token_sse, piece_sse = self.fmt.token_sse, self.fmt.piece_sse
        try:
            while True:
                outputs, terminal = self._split(batch)
                parts.extend(token_sse(o) if isinstance(o, str) else piece_sse(o) for o in outputs)
                if terminal is not None:
                    parts.extend(self._closing(terminal))
                    yield b"".join(parts)
                    return
                yield b"".join(parts)
                parts = []
                batch = await self.job.handoff.take()
        finally:  # normal end (no-op), client disconnect or server shutdown
            self.job.cancel.set()

    async def collect(self, first: list[Item]) -> AsyncIterator[tuple[list[Output], Terminal | None]]:
        """The batches of a ``stream=false`` answer (pieces, and the terminal event with the last)."""
        batch = first
        try:
            while True:
                outputs, terminal = self._split(batch)
                yield outputs, terminal
                if terminal is not None:
                    return
                batch = await self.job.handoff.take()
        finally:
            self.job.cancel.set()

    def final_answer(self, pieces: list[Output], terminal: Terminal) -> tuple[int, bytes]:
        """The status and JSON body of a ``stream=false`` answer."""
        if isinstance(terminal, ErrorEvent):
            error = failed_in_stream(terminal, self.service.worker_id) if self.relay else failed_before_first_token(
                terminal)
            return error.status, _json(error.body())
        if terminal.stop_reason == "cancelled":
            error = request_cancelled(self.job.request_id)
            return error.status, _json(error.body())
        return 200, _json(self.fmt.response(pieces, terminal))

    async def relayed_whole(self, first: list[Item]) -> AsyncIterator[bytes]:
        """``stream=false`` for the queen: a space per batch while generating, then the JSON (answer or error)."""
        parts: list[Output] = []
        async for outputs, terminal in self.collect(first):
            parts.extend(outputs)
            if terminal is not None:
                yield self.final_answer(parts, terminal)[1]
                return
            yield KEEPALIVE

    async def whole(self, first: list[Item]) -> Response:
        """``stream=false`` for any other client: the JSON once the generation ended."""
        parts: list[Output] = []
        async for outputs, terminal in self.collect(first):
            parts.extend(outputs)
            if terminal is not None:
                status, content = self.final_answer(parts, terminal)
                return Response(content, status_code=status, media_type="application/json",
                                headers={"X-Request-Id": self.job.request_id})  # fmt: skip
        raise AssertionError("a generation ends with a terminal event")


async def answer(service: WorkerService, request: Request, model: type[OpenAIRequest]) -> Response:
    """Validate, start the generation, wait for its first token, then answer (stream or whole)."""
    body = parse_json(await request.body(), model)
    if service.engine.config.embedding:
        raise wrong_model_type(body.model, embedding=True)
    request_id = _request_id(request, body)
    log_context.bind(request_id=request_id)  # this request's task, and its generation thread
    created = _int_header(request, CREATED_HEADER, int(time.time()), 0, 2**63 - 1)
    default_max = _int_header(request, DEFAULT_MAX_TOKENS_HEADER, DEFAULT_MAX_TOKENS, 1, MAX_TOKENS)
    relay = request.headers.get(RELAY_HEADER) == "1"
    generate = body.to_generate(request_id, default_max)
    job = service.start(generate)
    try:  # wait for the first item, so a request that fails at once gets a proper HTTP error
        first = await job.handoff.take()
    except BaseException:
        job.cancel.set()
        raise
    if isinstance(first[0], ErrorEvent):
        raise failed_before_first_token(first[0])
    fmt = formatter(body.kind, request_id, body.model, created, tool_call=bool(generate.call_tools),
                    logprobs=generate.logprobs is not None)  # fmt: skip
    run = Answer(service, job, fmt, body, relay)
    headers = {"X-Request-Id": request_id}
    if body.stream:
        return StreamingResponse(run.stream(first), media_type="text/event-stream",
                                 headers={**_STREAM_HEADERS, **headers})  # fmt: skip
    if relay:
        return StreamingResponse(run.relayed_whole(first), media_type="application/json", headers=headers)
    return await run.whole(first)


def add_openai_routes(app: FastAPI, service: WorkerService) -> None:
    """Add the two OpenAI routes to a worker's app, as plain Starlette routes that check the internal credential
    themselves (the per-token hot path: FastAPI's dependency resolution costs more than the rest of the route)."""
    auth: InternalAuth = app.state.internal_auth

    def route(model: type[OpenAIRequest]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            auth.check(request.headers.get("authorization"), ("worker",))
            return await answer(service, request, model)

        return endpoint

    app.add_route("/v1/completions", route(CompletionRequest), methods=["POST"])
    app.add_route("/v1/chat/completions", route(ChatCompletionRequest), methods=["POST"])
