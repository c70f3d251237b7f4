"""The worker's state: life cycle, slots, running generations and counters.

Generations run in threads (llama.cpp blocks); each one hands its text pieces, then one terminal
event, through a :class:`Handoff` to the HTTP response that streams them (a batch per wake-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from rbee_runtime.common.contracts import (
    EndEvent,
    ErrorEvent,
    GenerateRequest,
    WorkerHealth,
    WorkerState,
)
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.pieces import Output
from rbee_runtime.worker.engine import Engine, EngineError, GenerationStats
from rbee_runtime.worker.slots import SlotPool

log = logging.getLogger(__name__)

#: What a generation hands to the event loop: pieces of the answer, then one terminal event.
Item = Output | EndEvent | ErrorEvent
#: The terminal events.
Terminal = EndEvent | ErrorEvent

_RECENT_CANCELS = 1024


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Handoff:
    """Items from a generation thread to the event loop, in batches.

    The thread's :meth:`put` wakes the loop (one ``call_soon_threadsafe``) only when the consumer waits
    in :meth:`take`; items put while it is busy (e.g. sending the previous batch) join the next batch,
    which :meth:`take` returns whole. No timer: an item never waits for another one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[Item] = []
        self._waiter: asyncio.Future[None] | None = None
        #: Times the thread woke the loop (a regression to one wake-up per token shows here).
        self.wakeups = 0

    def put(self, item: Item) -> None:
        """Queue ``item`` (called from the generation thread)."""
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
            if waiter is not None:
                self.wakeups += 1
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody listens any more
                self._loop.call_soon_threadsafe(_wake, waiter)

    async def take(self) -> list[Item]:
        """Every item queued, waiting for at least one (called on the event loop)."""
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                waiter = self._waiter = self._loop.create_future()
            await waiter


@dataclass
class Job:
    """One running generation: its slot, its cancel flag and the handoff its items arrive on."""

    request_id: str
    slot: int
    handoff: Handoff
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Item) -> None:
        """Hand an item to the event loop (called from the generation thread)."""
        self.handoff.put(item)


def _error_event(code: str, message: str, field: str | None = None) -> ErrorEvent:
    """The terminal error event (a message quoting undecodable input is made valid text first)."""
    return ErrorEvent(code=code, message=message.encode("utf-8", "backslashreplace").decode("utf-8"), field=field)


def _remember(ids: OrderedDict[str, None], request_id: str) -> None:
    """Add ``request_id`` as the newest of ``ids``, which keeps the last ``_RECENT_CANCELS``."""
    ids[request_id] = None
    ids.move_to_end(request_id)
    while len(ids) > _RECENT_CANCELS:
        ids.popitem(last=False)


class WorkerService:
    """Everything the HTTP layer needs: ``health``, ``start``, ``cancel``, ``start_drain``."""

    def __init__(self, worker_id: str, model_id: str, engine: Engine) -> None:
        self.worker_id = worker_id
        self.model_id = model_id
        self.engine = engine
        self.slots = SlotPool(engine.slots)
        self.drain_requested = asyncio.Event()
        self.load_error: str | None = None
        self.load_error_code: str | None = None
        self._loaded = False
        self._draining = False
        self._jobs: dict[str, Job] = {}
        self._recent_cancels: OrderedDict[str, None] = OrderedDict()
        self._recent_ended: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._tokens_total = 0
        self._cancelled_total = 0
        self.started_total = 0
        self.last_activity = time.time()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> WorkerState:
        if self._draining:
            return WorkerState.DRAINING
        if not self._loaded:
            return WorkerState.CRASHED if self.load_error else WorkerState.LOADING
        return WorkerState.BUSY if self.slots.busy else WorkerState.IDLE

    def mark_loaded(self) -> None:
        self._loaded = True
        self.last_activity = time.time()

    def mark_failed(self, reason: str, code: str | None = None) -> None:
        self.load_error = reason
        self.load_error_code = code

    def start_drain(self) -> None:
        """Refuse new work from now on and wake the drain watcher (call on the event loop)."""
        if not self._draining:
            log.info("draining: refusing new requests, %d running", self.slots.busy)
        self._draining = True
        self.drain_requested.set()

    def health(self) -> WorkerHealth:
        with self._lock:
            tokens, cancelled = self._tokens_total, self._cancelled_total
        return WorkerHealth(
            status="error" if self.load_error else "ok",
            worker_id=self.worker_id,
            model_id=self.model_id,
            state=self.state,
            slots_total=self.slots.total,
            slots_busy=self.slots.busy,
            tokens_generated_total=tokens,
            requests_cancelled_total=cancelled,
            n_gpu_layers=offload.n_gpu_layers if (offload := self.engine.offload) is not None else None,
            layers_total=offload.layers_total if offload is not None else None,
            error_code=self.load_error_code,
        )

    # ------------------------------------------------------------------ generations

    def _check_open(self) -> None:
        """503 while the worker drains or still loads."""
        state = self.state
        if state is WorkerState.DRAINING:
            raise ApiError(503, ErrorCode.WORKER_DRAINING, "This worker is shutting down; send the request elsewhere.")
        if state in (WorkerState.LOADING, WorkerState.CRASHED):
            raise ApiError(
                503,
                ErrorCode.WORKER_LOADING,
                "The model is still loading; retry shortly.",
                headers={"Retry-After": "1"},
            )

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Embed ``texts`` on a free slot (in a thread): the vectors and the tokens read."""
        self._check_open()
        slot = self.slots.acquire()
        self.last_activity = time.time()
        try:
            return await asyncio.to_thread(self.engine.embed, slot, texts)
        finally:
            self.slots.release(slot)
            self.last_activity = time.time()

    def start(self, request: GenerateRequest) -> Job:
        """Take a slot and start the generation in a thread (call on the event loop)."""
        self._check_open()
        with self._lock:
            if request.request_id in self._jobs:
                raise ApiError(
                    409, ErrorCode.REQUEST_ID_IN_USE, f"A generation with request_id {request.request_id!r} is running."
                )
        slot = self.slots.acquire()
        self.started_total += 1
        job = Job(request_id=request.request_id, slot=slot, handoff=Handoff(asyncio.get_running_loop()))
        with self._lock:
            self._jobs[job.request_id] = job
            self._recent_ended.pop(job.request_id, None)
            if job.request_id in self._recent_cancels:  # cancelled before it arrived
                del self._recent_cancels[job.request_id]
                job.cancel.set()
        self.last_activity = time.time()
        # the request's log context (its id) goes with it into the thread
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._run, job, request), name=f"gen-{request.request_id}",
                                  daemon=True)  # fmt: skip
        thread.start()
        return job

    def cancel(self, request_id: str) -> None:
        """Stop a generation (idempotent).

        An id that is not running is remembered in case its request arrives late, unless a request
        with that id just ended here: then the cancel came after the end (e.g. the client's
        disconnect stopped it first), and must not cancel a later request that reuses the id.
        """
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None:
                if request_id not in self._recent_ended:
                    _remember(self._recent_cancels, request_id)
                return
        job.cancel.set()

    def cancel_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()

    def _count_token(self) -> None:
        with self._lock:
            self._tokens_total += 1

    def _run(self, job: Job, request: GenerateRequest) -> None:
        """Thread body: stream the pieces of one generation, then exactly one terminal event."""
        stats = GenerationStats()
        terminal: EndEvent | ErrorEvent
        try:
            for piece in self.engine.generate(job.slot, request, job.cancel, stats, self._count_token):
                job.emit(piece)
            terminal = EndEvent(
                tokens_out=stats.tokens_out,
                prompt_tokens=stats.prompt_tokens,
                stop_reason=stats.stop_reason,
                decode_ms=round(stats.decode_ms, 3),
            )
        except EngineError as exc:
            log.warning("request %s failed: %s", job.request_id, exc.message)
            terminal = _error_event(exc.code, exc.message, exc.field)
        except Exception as exc:  # never leave a stream without its terminal event
            log.exception("request %s failed", job.request_id)
            terminal = _error_event(ErrorCode.GENERATION_FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._jobs.pop(job.request_id, None)
                _remember(self._recent_ended, job.request_id)
                if stats.stop_reason == "cancelled":
                    self._cancelled_total += 1
            self.slots.release(job.slot)  # before the terminal event: a client may retry at once
            self.last_activity = time.time()
        log.info(
            "request %s: %s, %d prompt + %d generated tokens",
            job.request_id,
            getattr(terminal, "stop_reason", terminal.type),
            stats.prompt_tokens,
            stats.tokens_out,
        )
        job.emit(terminal)
