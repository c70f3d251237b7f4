"""The dashboard's routes: the page and its files (open: they hold no data) and the state (behind the API keys)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from rbee_runtime.common.tasks import cancel_and_wait
from rbee_runtime.queen.auth import require_api_key
from rbee_runtime.queen.dashboard.board import Dashboard
from rbee_runtime.queen.dashboard.events import QUEEN_LOGGER, LogCapture
from rbee_runtime.queen.dashboard.schema import DashboardState

_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}  # fmt: skip
#: The page runs only its own script and talks only to its own origin.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def board_of(app: FastAPI) -> Dashboard:
    """The app's dashboard (made on first use)."""
    board: Dashboard | None = getattr(app.state, "dashboard", None)
    if board is None:
        board = app.state.dashboard = Dashboard(app.state.queen)
    return board


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Watch the cluster and sample the counters while the queen runs; capture the queen's warnings."""
    board = board_of(app)
    capture = LogCapture(board.errors)
    logging.getLogger(QUEEN_LOGGER).addHandler(capture)
    task = asyncio.create_task(board.run(), name="queen-dashboard")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        logging.getLogger(QUEEN_LOGGER).removeHandler(capture)


router = APIRouter(prefix="/ui", tags=["dashboard"], lifespan=lifespan)


def _file(name: str) -> Response:
    return Response(_static(name), media_type=_FILES[name], headers=_HEADERS)


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The dashboard page."""
    return _file("index.html")


@router.get("/app.js", include_in_schema=False)
async def script() -> Response:
    return _file("app.js")


@router.get("/style.css", include_in_schema=False)
async def style() -> Response:
    return _file("style.css")


@router.get("/api/state", dependencies=[Depends(require_api_key)])
async def state(request: Request) -> JSONResponse:
    """The cluster now (``DashboardState``): hosts, GPUs, workers, queues, traffic, recent errors."""
    snapshot: DashboardState = board_of(request.app).snapshot()
    return JSONResponse(snapshot.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
