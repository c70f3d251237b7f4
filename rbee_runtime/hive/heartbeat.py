"""Heartbeats to the queen: every ``heartbeat_interval_s``, and at once when a worker changes state.

An unreachable queen is logged (once per outage) and retried on the next beat; it never
stops the hive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import httpx

from rbee_runtime.common.contracts import Heartbeat, WorkerInfo, WorkerState
from rbee_runtime.common.tasks import cancel_and_wait
from rbee_runtime.common.tls import TlsFiles, client_options

log = logging.getLogger("rbee.hive.heartbeat")

#: Changes that do not warrant an immediate beat (the periodic one carries them).
_QUIET = {frozenset({WorkerState.IDLE, WorkerState.BUSY})}
_MAX_DEPARTED = 100


class HeartbeatSender:
    """Posts a ``Heartbeat`` built by ``build`` to ``<queen_url>/v1/hives/heartbeat``, with ``credential``.

    ``tls``: the queen must present a certificate of the cluster CA (and be ``https://``).
    """

    def __init__(
        self,
        queen_url: str,
        interval_s: float,
        build: Callable[[], Awaitable[Heartbeat]],
        credential: str | None = None,
        timeout_s: float = 3.0,
        tls: TlsFiles | None = None,
    ) -> None:
        self.url = f"{queen_url.rstrip('/')}/v1/hives/heartbeat"
        self.interval_s = interval_s
        self._build = build
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=headers, trust_env=False, **client_options(tls))
        self._wake_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._departed: dict[str, WorkerInfo] = {}
        self._lock = threading.Lock()
        self._queen_ok: bool | None = None
        self.sent = 0
        #: Set once the first heartbeat was tried (taken or not): part of the hive's readiness.
        self.first_tried = asyncio.Event()
        #: Since when (wall clock) the queen has not taken a heartbeat, and why (None: it takes them).
        self.failing_since: float | None = None
        self.problem = ""

    # ------------------------------------------------------------------ triggers

    def on_worker_change(self, old: WorkerInfo, new: WorkerInfo) -> None:
        """Registry listener: remember stopped workers for one beat, beat now on real changes."""
        if new.state == WorkerState.STOPPED:
            with self._lock:
                self._departed[new.worker_id] = new
                while len(self._departed) > _MAX_DEPARTED:
                    self._departed.pop(next(iter(self._departed)))
        if frozenset({old.state, new.state}) in _QUIET:
            return
        self.wake()

    def wake(self) -> None:
        """Send a heartbeat as soon as possible (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake_event.set()
        else:
            loop.call_soon_threadsafe(self._wake_event.set)

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="hive-heartbeat")

    async def close(self, final: bool = True) -> None:
        """Stop the loop; with ``final`` send one last beat (it reports the stopped workers)."""
        await cancel_and_wait(self._task)
        if final:
            await self.send_once()
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            self._wake_event.clear()
            await self.send_once()
            self.first_tried.set()
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow the task's
            # cancellation when the event is set at the same moment, and close() then hangs.
            waiter = asyncio.ensure_future(self._wake_event.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.interval_s)
            finally:
                waiter.cancel()

    async def send_once(self) -> bool:
        """Build and post one heartbeat; False (and a log line) when the queen did not take it."""
        try:
            beat = await self._build()
        except Exception:
            log.exception("could not build the heartbeat")
            return False
        with self._lock:
            departed = dict(self._departed)
        present = {w.worker_id for w in beat.workers}
        beat = beat.model_copy(update={"workers": beat.workers + [w for i, w in departed.items() if i not in present]})
        try:
            resp = await self._http.post(self.url, json=beat.model_dump(mode="json"))
        except httpx.HTTPError as exc:
            self._report(False, f"queen at {self.url} is unreachable ({type(exc).__name__}: {exc})")
            return False
        if resp.status_code >= 300:
            self._report(False, f"queen at {self.url} refused the heartbeat: HTTP {resp.status_code} {resp.text[:200]}")
            return False
        with self._lock:
            for worker_id in departed:
                self._departed.pop(worker_id, None)
        self.sent += 1
        self._report(True, f"heartbeats reach the queen at {self.url}")
        return True

    def _report(self, ok: bool, message: str) -> None:
        if ok:
            self.failing_since, self.problem = None, ""
        else:
            self.failing_since = self.failing_since or time.time()
            self.problem = message
        if ok == self._queen_ok:
            log.debug(message)
            return
        self._queen_ok = ok
        if ok:
            log.info(message)
        else:
            log.warning("%s; the hive keeps running and retries every %g s", message, self.interval_s)
