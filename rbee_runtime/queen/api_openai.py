"""The public, OpenAI-compatible routes: models, completions, chat completions, cancel."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.auth import require_api_key
from rbee_runtime.queen.http_utils import ClosingStreamingResponse, parse_body, watch_disconnect
from rbee_runtime.queen.openai_format import (
    ChatCompletionRequest,
    ChatFormatter,
    CompletionFormatter,
    CompletionRequest,
    Formatter,
    new_request_id,
)
from rbee_runtime.queen.state import QueenState, get_state

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["openai"])

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: A request id a client may choose (``X-Request-Id``): what the workers accept, safe in URLs and logs.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


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


@router.get("/models")
async def list_models(state: QueenState = Depends(get_state)) -> dict[str, Any]:
    """Every model an online hive's catalog holds (or an online worker runs), OpenAI style."""
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "rbee"} for m in state.registry.models()
        ],
    }


async def _run(request: Request, state: QueenState, kind: Literal["completion", "chat"]) -> Response:
    body: CompletionRequest | ChatCompletionRequest
    if kind == "chat":
        body = await parse_body(request, ChatCompletionRequest)
    else:
        body = await parse_body(request, CompletionRequest)
    label = body.model if state.registry.knows_model(body.model) else "unknown"
    try:
        request_id = client_request_id(request) or new_request_id(kind)
    except ApiError as exc:
        state.metrics.requests.labels(model=label, status=str(exc.status)).inc()
        raise
    headers = {"X-Request-Id": request_id}
    fmt: Formatter = (ChatFormatter if kind == "chat" else CompletionFormatter)(request_id, body.model)
    service = state.inference
    try:
        job = service.begin(request_id, body.model, body.to_generate(request_id, state.config.default_max_tokens))
    except ApiError as exc:  # the id is in use
        exc.headers = {**exc.headers, **headers}
        state.metrics.requests.labels(model=label, status=str(exc.status)).inc()
        raise
    try:
        async with watch_disconnect(request, lambda: service.cancel(request_id)):
            if body.stream:
                generation = await service.start(job)
            else:
                text, end = await service.complete(job)
    except ApiError as exc:
        service.end(job)
        exc.headers = {**exc.headers, **headers}
        state.metrics.requests.labels(model=label, status=str(exc.status)).inc()
        raise
    except BaseException:
        service.end(job)
        raise
    state.metrics.requests.labels(model=label, status="200").inc()
    if body.stream:
        return ClosingStreamingResponse(
            service.stream(job, generation, fmt, body.include_usage),
            media_type="text/event-stream",
            headers={**headers, **_STREAM_HEADERS},
        )
    service.end(job)
    return JSONResponse(fmt.response(text, end), headers=headers)


@router.post("/completions", response_model=None)
async def completions(request: Request, state: QueenState = Depends(get_state)) -> Response:
    """OpenAI text completion (``stream`` true or false)."""
    return await _run(request, state, "completion")


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, state: QueenState = Depends(get_state)) -> Response:
    """OpenAI chat completion (``stream`` true or false)."""
    return await _run(request, state, "chat")


@router.delete("/requests/{request_id}", status_code=204, response_class=Response)
async def cancel_request(request_id: str, state: QueenState = Depends(get_state)) -> Response:
    """Cancel a request (queued or running); 204 always."""
    await state.inference.cancel(request_id)
    return Response(status_code=204)
