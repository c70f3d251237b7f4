"""The worker's HTTP API (FastAPI): health, metrics, OpenAI completions (its one way to generate), cancellation,
shutdown."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from rbee_runtime.common.contracts import WorkerHealth
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import error_body, install_error_handlers
from rbee_runtime.common.internal_auth import InternalAuth, require
from rbee_runtime.common.limits import install_limits
from rbee_runtime.worker import metrics
from rbee_runtime.worker.embedding_routes import add_embedding_routes
from rbee_runtime.worker.openai_routes import add_openai_routes
from rbee_runtime.worker.service import WorkerService


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

    add_openai_routes(app, service)
    add_embedding_routes(app, service)

    @app.delete("/v1/requests/{request_id}", status_code=204)
    async def cancel(request_id: str) -> Response:
        service.cancel(request_id)
        return Response(status_code=204)

    @app.post("/v1/shutdown", status_code=202)
    async def shutdown() -> WorkerHealth:
        service.start_drain()
        return service.health()

    return app
