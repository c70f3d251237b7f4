"""Prometheus metrics of the queen (one ``CollectorRegistry`` per app, never the global one).

Label sets are bounded: a model label is a model some hive reported (else ``unknown``), and at most
:data:`MAX_MODEL_LABELS` distinct ones are used (later ones are counted as ``other``), so no client
and no hive can make the series grow without end.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rbee_runtime.common.contracts import WorkerState
from rbee_runtime.common.metrics_build_info import add_build_info
from rbee_runtime.queen.registry import Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TPS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 500.0, 1000.0)

#: Most distinct model labels.
MAX_MODEL_LABELS = 64
#: The label of a model no hive reported (a client's typo), and of models past :data:`MAX_MODEL_LABELS`.
UNKNOWN_MODEL = "unknown"
OTHER_MODELS = "other"


class QueenMetrics:
    """The queen's counters, histogram and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        add_build_info(self.registry, "queen")
        self.requests = Counter(
            "rbee_queen_requests", "Completion requests by model and HTTP status.",
            ["model", "status"], registry=self.registry,
        )
        self.tokens = Counter(
            "rbee_queen_tokens_generated", "Tokens streamed back to clients.", ["model"], registry=self.registry
        )
        self.failovers = Counter(
            "rbee_queen_failovers", "Requests retried on another worker.", ["model"], registry=self.registry
        )
        self.ttft = Histogram(
            "rbee_queen_time_to_first_token_seconds", "From request arrival to the first token.",
            ["model"], buckets=_TTFT_BUCKETS, registry=self.registry,
        )
        self.duration = Histogram(
            "rbee_queen_request_duration_seconds", "From request arrival to its end (answered, failed or cancelled).",
            ["model"], buckets=_DURATION_BUCKETS, registry=self.registry,
        )
        self.tokens_per_second = Histogram(
            "rbee_queen_tokens_per_second", "Tokens of a request that produced some, over its duration.",
            ["model"], buckets=_TPS_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "rbee_queen_queue_depth", "Requests waiting for a worker slot.", ["model"], registry=self.registry
        )
        self.workers = Gauge(
            "rbee_queen_workers", "Workers known from heartbeats, by state (stale hives: state 'stale').",
            ["state"], registry=self.registry,
        )
        self.hives_online = Gauge("rbee_queen_hives_online", "Hives sending heartbeats.", registry=self.registry)
        self.hives_stale = Gauge("rbee_queen_hives_stale", "Hives whose heartbeats stopped.", registry=self.registry)
        self._model_labels: set[str] = set()
        self._queue_labels: set[str] = set()

    def model_label(self, model: str, known: bool) -> str:
        """The label of ``model`` (``known``: some hive reported it): itself, ``unknown`` or ``other``."""
        if not known:
            return UNKNOWN_MODEL
        if model in self._model_labels or len(self._model_labels) < MAX_MODEL_LABELS:
            self._model_labels.add(model)
            return model
        return OTHER_MODELS

    def observe_end(self, label: str, seconds: float, tokens: int) -> None:
        """A request's end: its duration and, when it produced tokens, its tokens per second (once per request)."""
        seconds = max(0.0, seconds)
        self.duration.labels(model=label).observe(seconds)
        if tokens > 0 and seconds > 0:
            self.tokens_per_second.labels(model=label).observe(tokens / seconds)

    def render(self, registry: Registry, queue_depths: dict[str, int]) -> bytes:
        """Refresh the gauges from the current state and return the text exposition."""
        hives = registry.hives()
        self.hives_online.set(sum(1 for h in hives if h.status == "online"))
        self.hives_stale.set(sum(1 for h in hives if h.status == "stale"))
        counts = {str(s): 0 for s in WorkerState} | {"stale": 0}
        for w in registry.workers():
            counts["stale" if w.status == "stale" else str(w.info.state)] += 1
        for state, n in counts.items():
            self.workers.labels(state=state).set(n)
        depths: dict[str, int] = {}
        for model in set(queue_depths) | set(registry.models()):
            label = self.model_label(model, True)
            depths[label] = depths.get(label, 0) + queue_depths.get(model, 0)
        for gone in self._queue_labels - set(depths):  # models no hive reports any more
            self.queue_depth.remove(gone)
        self._queue_labels = set(depths)
        for label, depth in depths.items():
            self.queue_depth.labels(model=label).set(depth)
        return generate_latest(self.registry)
