"""Traffic over the last minutes, from the queen's Prometheus counters read every few seconds.

Nothing is counted on the request path for this: a :class:`Sample` reads the cumulative counters that
the requests already update (tokens, requests by status, the first-token histogram), and rates are the
differences between samples.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics import MetricWrapperBase

from rbee_runtime.queen.dashboard.schema import RatePoint, Rates
from rbee_runtime.queen.metrics import QueenMetrics


@dataclass(frozen=True)
class Sample:
    """The cumulative counters at one instant (``at``: monotonic, ``wall``: wall clock)."""

    at: float
    wall: float
    tokens: dict[str, float] = field(default_factory=dict)
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    ttft_sum: dict[str, float] = field(default_factory=dict)
    ttft_count: dict[str, float] = field(default_factory=dict)
    #: Upper bound → cumulative count, all models together.
    ttft_buckets: dict[float, float] = field(default_factory=dict)


def _samples(metric: MetricWrapperBase) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in metric.collect():
        for s in family.samples:
            yield s.name, s.labels, s.value


def read_sample(metrics: QueenMetrics, at: float | None = None, wall: float | None = None) -> Sample:
    """The queen's counters now."""
    sample = Sample(time.monotonic() if at is None else at, time.time() if wall is None else wall)
    for name, labels, value in _samples(metrics.tokens):
        if name.endswith("_total"):
            sample.tokens[labels["model"]] = value
    for name, labels, value in _samples(metrics.requests):
        if name.endswith("_total"):
            sample.requests[(labels["model"], labels["status"])] = value
    for name, labels, value in _samples(metrics.ttft):
        if name.endswith("_sum"):
            sample.ttft_sum[labels["model"]] = value
        elif name.endswith("_count"):
            sample.ttft_count[labels["model"]] = value
        elif name.endswith("_bucket"):
            bound = float(labels["le"])
            sample.ttft_buckets[bound] = sample.ttft_buckets.get(bound, 0.0) + value
    return sample


def _delta(new: dict[str, float], old: dict[str, float], model: str | None = None) -> float:
    keys = new if model is None else (model,)
    return sum(new.get(k, 0.0) - old.get(k, 0.0) for k in keys)


def request_delta(new: Sample, old: Sample, *, errors: bool, model: str | None = None) -> float:
    """Requests answered between two samples (``errors``: only those with a status of 400 or more)."""
    return sum(
        value - old.requests.get(key, 0.0)
        for key, value in new.requests.items()
        if (model is None or key[0] == model) and (not errors or int(key[1]) >= 400)
    )


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets (linear within a bucket); None when empty."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, buckets[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return None
    target, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= target:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((target - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def _avg(total: float, count: float) -> float | None:
    return round(total / count, 4) if count > 0 else None


class History:
    """The last ``horizon_s`` of samples, one every ``step_s``."""

    def __init__(self, step_s: float = 5.0, horizon_s: float = 900.0) -> None:
        self.step_s = step_s
        self._samples: deque[Sample] = deque(maxlen=int(horizon_s / step_s) + 1)

    def add(self, sample: Sample) -> Sample | None:
        """Keep ``sample``; the previous one (None for the first)."""
        previous = self._samples[-1] if self._samples else None
        self._samples.append(sample)
        return previous

    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def since(self, seconds: float, now: Sample) -> Sample | None:
        """The oldest sample not older than ``seconds`` before ``now`` (None when there is none before it)."""
        for sample in self._samples:
            if now.at - sample.at <= seconds + self.step_s / 2 and sample.at < now.at:
                return sample
        return None

    def model_rates(self, model: str, now: Sample, window_s: float) -> tuple[float, float, float | None]:
        """Tokens/s, requests/s and the mean first-token latency of ``model`` over ``window_s``."""
        old = self.since(window_s, now)
        if old is None:
            return 0.0, 0.0, None
        span = now.at - old.at
        return (
            round(_delta(now.tokens, old.tokens, model) / span, 2),
            round(request_delta(now, old, errors=False, model=model) / span, 3),
            _avg(_delta(now.ttft_sum, old.ttft_sum, model), _delta(now.ttft_count, old.ttft_count, model)),
        )

    def rates(self, now: Sample, window_s: float = 60.0, ttft_window_s: float = 300.0) -> Rates:
        """The cluster's traffic over ``window_s`` (first-token latency over ``ttft_window_s``) and the series."""
        rates = Rates(window_s=window_s, tokens_per_s=0.0, requests_per_s=0.0, errors=0,
                      ttft_window_s=ttft_window_s, step_s=self.step_s, series=self.series(now))  # fmt: skip
        old = self.since(window_s, now)
        if old is not None:
            span = now.at - old.at
            rates.tokens_per_s = round(_delta(now.tokens, old.tokens) / span, 2)
            rates.requests_per_s = round(request_delta(now, old, errors=False) / span, 3)
            rates.errors = int(request_delta(now, old, errors=True))
        old = self.since(ttft_window_s, now)
        if old is not None:
            rates.ttft_avg_s = _avg(_delta(now.ttft_sum, old.ttft_sum), _delta(now.ttft_count, old.ttft_count))
            buckets = {b: v - old.ttft_buckets.get(b, 0.0) for b, v in now.ttft_buckets.items()}
            p50, p95 = quantile(buckets, 0.5), quantile(buckets, 0.95)
            rates.ttft_p50_s = None if p50 is None else round(p50, 4)
            rates.ttft_p95_s = None if p95 is None else round(p95, 4)
        return rates

    def series(self, now: Sample) -> list[RatePoint]:
        """One point per step of the history (the last one ends at ``now``)."""
        samples = [*self._samples] if self._samples and self._samples[-1] is now else [*self._samples, now]
        points = []
        for old, new in itertools.pairwise(samples):
            span = new.at - old.at
            if span <= 0:
                continue
            points.append(RatePoint(
                at=round(new.wall, 3),
                tokens_per_s=round(_delta(new.tokens, old.tokens) / span, 2),
                requests_per_s=round(request_delta(new, old, errors=False) / span, 3),
                errors=int(request_delta(new, old, errors=True)),
                ttft_avg_s=_avg(_delta(new.ttft_sum, old.ttft_sum), _delta(new.ttft_count, old.ttft_count)),
            ))  # fmt: skip
        return points
