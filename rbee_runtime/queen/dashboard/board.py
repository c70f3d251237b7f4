"""One dashboard per queen app: the traffic history, the recent errors, and the snapshot of the cluster."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from rbee_runtime import __version__
from rbee_runtime.queen.dashboard.events import ClusterWatch, RecentErrors, note_request_errors
from rbee_runtime.queen.dashboard.history import History, read_sample
from rbee_runtime.queen.dashboard.schema import DashboardState, HostView, ModelView, WorkerView
from rbee_runtime.queen.registry import ACTIVE_STATES, HiveSnapshot, WorkerSnapshot
from rbee_runtime.queen.state import QueenState

log = logging.getLogger(__name__)

#: Seconds between two looks at the registry (crashes, stale hives), and between two counter samples.
WATCH_S = 0.5
SAMPLE_S = 5.0
#: The window of the rates shown (tokens/s, requests/s) and of the first-token latency.
RATE_WINDOW_S = 60.0
TTFT_WINDOW_S = 300.0
#: How far back the traffic history goes (the page's charts).
HISTORY_S = 600.0


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or url
    except (httpx.InvalidURL, TypeError):
        return url


def host_view(h: HiveSnapshot) -> HostView:
    beat, res = h.heartbeat, h.heartbeat.resources
    return HostView(
        hive_id=beat.hive_id, host=_host(beat.url), status=h.status, version=beat.version,
        last_heartbeat_age_s=round(h.age_s, 2), backends=beat.backends, cpu_count=res.cpu_count,
        ram_total_bytes=res.ram_total_bytes, ram_available_bytes=res.ram_available_bytes,
        gpus=sorted(res.gpus, key=lambda g: g.index), models=sorted(beat.models),
        workers=h.active_workers, max_workers=beat.max_workers,
    )  # fmt: skip


def worker_view(w: WorkerSnapshot, busy: int, now: float) -> WorkerView:
    info = w.info
    live = info.state in ACTIVE_STATES
    return WorkerView(
        worker_id=info.worker_id, hive_id=info.hive_id, model_id=info.model_id, backend=info.backend,
        device=info.device, state=info.state.value, status=w.status, routable=w.routable, slots_busy=busy,
        slots_total=info.slots_total, uptime_s=round(max(0.0, now - info.started_at), 1) if live else None,
        restarts=info.restarts, pid=info.pid, managed_by=info.managed_by, last_error=info.last_error,
    )  # fmt: skip


class Dashboard:
    """What ``/ui/api/state`` answers, kept up to date by :meth:`run` (one task per app)."""

    def __init__(self, state: QueenState) -> None:
        self.state = state
        self.history = History(step_s=SAMPLE_S, horizon_s=HISTORY_S)
        self.errors = RecentErrors()
        self.watch = ClusterWatch(self.errors)

    def tick(self, sample: bool) -> None:
        """Look at the registry; with ``sample``, read the counters too."""
        registry = self.state.registry
        self.watch.observe(registry.hives(), registry.workers())
        if sample:
            new = read_sample(self.state.metrics)
            old = self.history.add(new)
            if old is not None:
                note_request_errors(self.errors, new, old)

    async def run(self) -> None:
        """Tick until cancelled."""
        last_sample = -SAMPLE_S
        failed = False
        while True:
            now = time.monotonic()
            due = now - last_sample >= SAMPLE_S
            try:
                self.tick(sample=due)
                failed = False
            except Exception:  # one bad look must not end the dashboard; said once per outage
                if not failed:
                    log.exception("dashboard: reading the cluster's state failed")
                failed = True
            if due:
                last_sample = now
            await asyncio.sleep(WATCH_S)

    def snapshot(self) -> DashboardState:
        """The cluster now."""
        state, wall = self.state, time.time()
        hives, workers = state.registry.hives(), state.registry.workers()
        queues = state.scheduler.queue_depths()
        views = [worker_view(w, state.scheduler.inflight(w.info.worker_id), wall) for w in workers]
        now = read_sample(state.metrics)
        models = sorted(set(state.registry.models()) | set(queues) | {w.model_id for w in views})
        model_views = []
        for model in models:
            mine = [w for w in views if w.model_id == model]
            tokens, requests, ttft = self.history.model_rates(model, now, RATE_WINDOW_S)
            model_views.append(ModelView(
                model_id=model, workers=sum(w.routable for w in mine), slots_busy=sum(w.slots_busy for w in mine),
                slots_total=sum(w.slots_total for w in mine if w.routable), queued=queues.get(model, 0),
                tokens_per_s=tokens, requests_per_s=requests, ttft_avg_s=ttft,
            ))  # fmt: skip
        return DashboardState(
            queen_id=state.config.queen_id, version=__version__, now=round(wall, 3), api_keys=state.api_keys.enabled,
            hosts=[host_view(h) for h in hives], workers=views, models=model_views,
            rates=self.history.rates(now, RATE_WINDOW_S, TTFT_WINDOW_S), errors=self.errors.recent(),
        )  # fmt: skip
