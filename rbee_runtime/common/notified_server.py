"""uvicorn as a systemd ``Type=notify`` service: READY when really ready, a STATUS line, the watchdog, STOPPING.

:class:`NotifiedServer` sends ``READY=1`` once the app started (lifespan done), the socket listens and
:meth:`NotifiedServer.until_ready` returned True (a worker: its model loaded and its own ``/health`` answered);
then, every :data:`STATUS_INTERVAL_S`, ``STATUS=`` when ``describe()`` says something new (a state, not a counter);
``WATCHDOG=1`` from the event loop every half ``WatchdogSec=`` (a blocked loop gets the service restarted);
``STOPPING=1`` when a signal stops it. Without ``$NOTIFY_SOCKET`` none of this runs (:mod:`.sd_notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

from rbee_runtime.common.sd_notify import Notifier, notifier
from rbee_runtime.common.tasks import cancel_and_wait

#: Seconds between two looks at the service's status line.
STATUS_INTERVAL_S = 5.0


class NotifiedServer(uvicorn.Server):
    """A uvicorn server that reports to systemd; ``describe()`` is its status line once ready."""

    def __init__(
        self, config: uvicorn.Config, describe: Callable[[], str], *,
        ready_when: Callable[[], Awaitable[bool]] | None = None, sd: Notifier | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config)
        self.notifier = sd if sd is not None else notifier()
        self.describe = describe
        self.ready_when = ready_when
        self.ready = False
        self._background: set[asyncio.Task[None]] = set()

    async def until_ready(self) -> bool:
        """Wait until the service may say ``READY=1`` (False: it never will, e.g. its model failed to load);
        ``ready_when`` decides, else ready at once."""
        return await self.ready_when() if self.ready_when is not None else True

    def background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` beside the server until the loop ends (a reference is kept)."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.notifier.enabled:
            return
        if (interval := self.notifier.watchdog_interval_s) is not None:
            self.background(self._watchdog(interval), "sd-watchdog")
        self.background(self._report(), "sd-status")

    async def _watchdog(self, interval_s: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)

    async def _report(self) -> None:
        if not await self.until_ready():
            return
        self.ready = True
        self.notifier.ready(self.describe())
        while not self.should_exit:
            await asyncio.sleep(STATUS_INTERVAL_S)
            if not self.should_exit:
                self.notifier.status(self.describe())

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.notifier.stopping(f"stopping ({signal.Signals(sig).name})")
        super().handle_exit(sig, frame)


@contextlib.asynccontextmanager
async def starting_longer(sd: Notifier, status: str, every_s: float = 10.0) -> AsyncIterator[None]:
    """While the block runs (slow start-up work in a thread: a model's checksum), extend systemd's start timeout
    every ``every_s`` by three times that, with ``status``."""
    if not sd.enabled:
        yield
        return

    async def extend() -> None:
        while True:
            sd.extend_start(3 * every_s, status)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(extend(), name="sd-extend-start")
    try:
        yield
    finally:
        await cancel_and_wait(task)
