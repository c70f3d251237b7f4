"""Build the queen's FastAPI application (routes per docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import error_body, install_error_handlers
from rbee_runtime.common.limits import install_limits
from rbee_runtime.common.tasks import cancel_and_wait
from rbee_runtime.common.tls import client_options
from rbee_runtime.queen import api_internal, api_openai, api_ops
from rbee_runtime.queen.auth import ApiKeys
from rbee_runtime.queen.clients import HiveClient, WorkerClient
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.dashboard.routes import router as dashboard_router
from rbee_runtime.queen.inference import InferenceService
from rbee_runtime.queen.internal_plane import PeerAuth, QueenCredentials
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Scheduler
from rbee_runtime.queen.state import QueenState
from rbee_runtime.queen.worker_http import WorkerHttp

log = logging.getLogger(__name__)


def build_state(config: QueenConfig, clock: Callable[[], float] = time.monotonic) -> QueenState:
    """Wire the queen's objects together (no I/O happens here)."""
    registry = Registry(config.stale_timeout_s, clock=clock)
    credentials = QueenCredentials(config.cluster_secret)
    http = httpx.AsyncClient(
        trust_env=False,
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        auth=PeerAuth(credentials, registry),
        **client_options(config.tls),  # with TLS: hives and workers must chain to the cluster CA
    )
    metrics = QueenMetrics()
    scheduler = Scheduler(
        registry,
        HiveClient(http),
        queue_max=config.queue_max,
        queue_timeout_s=config.queue_timeout_s,
        loading_timeout_s=config.loading_timeout_s,
        poll_interval_s=config.spawn_poll_interval_s,
        clock=clock,
    )
    inference = InferenceService(
        registry,
        scheduler,
        WorkerClient(
            http,
            read_timeout_s=config.request_timeout_s,
            relay=WorkerHttp(config.tls.client() if config.tls else None),
            credential_of=credentials.workers_of,
        ),
        metrics,
        max_failover_attempts=config.max_failover_attempts,
        quarantine_s=config.stale_timeout_s,
        clock=clock,
    )
    return QueenState(
        config=config, registry=registry, scheduler=scheduler, inference=inference, metrics=metrics,
        api_keys=ApiKeys(config.api_keys), credentials=credentials, http=http,
    )


async def _housekeeping(state: QueenState) -> None:
    """Drop silent hives and hand freed capacity to waiting requests, periodically."""
    interval = min(state.config.heartbeat_interval_s, state.config.stale_timeout_s / 4)
    while True:
        await asyncio.sleep(interval)
        dropped = state.registry.prune()
        if dropped:
            log.warning("dropped hives without heartbeat for %g s: %s", 2 * state.config.stale_timeout_s,
                        ", ".join(dropped))
        state.scheduler.dispatch()


def create_app(config: QueenConfig, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The queen application for ``config``."""
    state = build_state(config, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_housekeeping(state), name="queen-housekeeping")
        log.info(
            "queen %s ready (API keys %s, internal plane %s)", config.queen_id,
            "on" if state.api_keys.enabled else "off", "authenticated" if state.credentials.enabled else "open",
        )  # fmt: skip
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await state.http.aclose()
            state.inference.workers.relay.close()

    app = FastAPI(title=f"rbee queen {config.queen_id}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.queen = state
    app.state.api_keys = state.api_keys
    install_error_handlers(app)
    install_limits(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrorCode.HTTP_ERROR)
        return JSONResponse(
            error_body(code, str(exc.detail), status=exc.status_code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.include_router(api_openai.completion_router)  # first: the hot path matches at once
    app.include_router(api_ops.open_router)
    app.include_router(api_internal.router)
    app.include_router(api_ops.router)
    app.include_router(api_openai.router)
    app.include_router(dashboard_router)  # /ui: the live dashboard and its state
    return app
