"""The worker's HTTP API (FastAPI): health, metrics, OpenAI completions, generation, cancellation, shutdown."""

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
from rbee_runtime.worker.openai_routes import add_openai_routes, failed_before_first_token
from rbee_runtime.worker.service import Item, Job, WorkerService


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


async def _stream(job: Job, first: list[Item]) -> AsyncIterator[str]:
    """SSE body of ``/v1/generate``: the events as they arrive (a body chunk per batch), then ``[DONE]``;
    leaving early cancels the generation."""
    batch, index = first, 0
    try:
        while True:
            parts = []
            for item in batch:
                if isinstance(item, str):
                    parts.append(_sse(TokenEvent(text=item, index=index).model_dump_json()))
                    index += 1
                else:
                    parts.append(_sse(item.model_dump_json()))
                    parts.append(_sse("[DONE]"))
            yield "".join(parts)
            if not isinstance(batch[-1], str):
                return
            batch = await job.handoff.take()
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
            first = await job.handoff.take()
        except BaseException:
            job.cancel.set()
            raise
        if isinstance(first[0], ErrorEvent):
            raise failed_before_first_token(first[0])
        return StreamingResponse(
            _stream(job, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-Id": job.request_id},
        )

    add_openai_routes(app, service)

    @app.delete("/v1/requests/{request_id}", status_code=204)
    async def cancel(request_id: str) -> Response:
        service.cancel(request_id)
        return Response(status_code=204)

    @app.post("/v1/shutdown", status_code=202)
    async def shutdown() -> WorkerHealth:
        service.start_drain()
        return service.health()

    return app
