"""The worker's HTTP API (FastAPI): health, metrics, streaming generation, cancellation, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from rbee_runtime.common.contracts import ErrorEvent, GenerateRequest, TokenEvent, WorkerHealth
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError, error_body, install_error_handlers
from rbee_runtime.common.internal_auth import InternalAuth, require
from rbee_runtime.common.limits import install_limits
from rbee_runtime.worker import metrics
from rbee_runtime.worker.service import Event, Job, WorkerService

_CLIENT_ERRORS: dict[str, int] = {ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400, ErrorCode.INPUT_REJECTED: 400}


def _sse(event: Event | str) -> str:
    data = event if isinstance(event, str) else event.model_dump_json()
    return f"data: {data}\n\n"


async def _stream(job: Job, first: Event) -> AsyncIterator[str]:
    """SSE body: the events as they arrive, then ``[DONE]``; leaving early cancels the generation."""
    event = first
    try:
        while True:
            yield _sse(event)
            if not isinstance(event, TokenEvent):
                break
            event = await job.events.get()
        yield _sse("[DONE]")
    finally:  # normal end (no-op), client disconnect or server shutdown
        job.cancel.set()


def create_app(service: WorkerService, credential: str | None = None) -> FastAPI:
    """Build the FastAPI application of one worker; with ``credential`` every route requires it."""
    app = FastAPI(
        title=f"rbee worker {service.worker_id}", docs_url=None, redoc_url=None, openapi_url=None,
        dependencies=[Depends(require("worker"))],
    )  # fmt: skip
    app.state.internal_auth = InternalAuth({"worker": credential} if credential else None)
    install_error_handlers(app)
    install_limits(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrorCode.HTTP_ERROR)
        body = error_body(code, str(exc.detail), status=exc.status_code)
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health() -> WorkerHealth:
        return service.health()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(service), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/generate", response_model=None)
    async def generate(request: GenerateRequest) -> StreamingResponse:
        if (request.prompt is None) == (request.messages is None) or request.messages == []:
            raise ApiError(
                422,
                ErrorCode.INVALID_REQUEST,
                "Invalid request body: prompt/messages: give exactly one of 'prompt' or 'messages' (non-empty)",
                details={"fields": ["prompt", "messages"]},
            )
        job = service.start(request)
        try:  # wait for the first event, so a request that fails at once gets a proper HTTP error
            first = await job.events.get()
        except BaseException:
            job.cancel.set()
            raise
        if isinstance(first, ErrorEvent):
            fields = {"fields": [first.field]} if first.field else None
            raise ApiError(_CLIENT_ERRORS.get(first.code, 500), first.code, first.message, details=fields)
        return StreamingResponse(
            _stream(job, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-Id": job.request_id},
        )

    @app.delete("/v1/requests/{request_id}", status_code=204)
    async def cancel(request_id: str) -> Response:
        service.cancel(request_id)
        return Response(status_code=204)

    @app.post("/v1/shutdown", status_code=202)
    async def shutdown() -> WorkerHealth:
        service.start_drain()
        return service.health()

    return app
