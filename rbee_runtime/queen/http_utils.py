"""HTTP helpers of the queen's routes: strict body parsing, disconnect watching."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.types import Receive

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse the JSON body into ``model``; 422 INVALID_REQUEST naming the field (or the JSON error)."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST,
            f"The request body is not valid JSON ({exc}); send a JSON object with Content-Type: application/json.",
        ) from exc
    if not isinstance(data, dict):
        raise ApiError(422, ErrorCode.INVALID_REQUEST, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(_field(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        fields = list(dict.fromkeys(f for f, _ in problems))
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST,
            "Invalid request body: " + "; ".join(f"{f}: {m}" for f, m in problems),
            details={"fields": fields},
        ) from exc


@contextlib.asynccontextmanager
async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """While the block runs (body already read), call ``on_disconnect`` if the client goes away."""

    async def _watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await on_disconnect()
                return

    task = asyncio.create_task(_watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
