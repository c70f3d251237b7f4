"""HTTP helpers of the queen's routes: strict body parsing (:mod:`rbee_runtime.common.bodies`), disconnect watching."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.types import Receive

from rbee_runtime.common.bodies import parse_body
from rbee_runtime.common.tasks import cancel_and_wait

__all__ = ["parse_body", "watch_disconnect"]


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
        await cancel_and_wait(task)
