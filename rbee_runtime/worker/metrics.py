"""The worker's ``/metrics`` (Prometheus text): its counters and slot use, read at each scrape.

Besides the figures of ``/health``, it tells what a sample of ``/health`` can miss: the most slots
that were busy at once, how often every slot was taken, how many requests found none free.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.metrics_build_info import add_build_info
from rbee_runtime.worker.service import WorkerService


class _WorkerCollector(Collector):
    def __init__(self, service: WorkerService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        health = self.service.health()
        slots = self.service.slots
        yield GaugeMetricFamily("rbee_worker_slots", "Slots of this worker.", value=slots.total)
        yield GaugeMetricFamily("rbee_worker_slots_busy", "Slots running a generation now.", value=health.slots_busy)
        yield GaugeMetricFamily(
            "rbee_worker_slots_busy_max", "Most slots running a generation at once since start.", value=slots.busy_max
        )
        yield CounterMetricFamily(
            "rbee_worker_slots_full", "Times the last free slot was taken.", value=slots.full_total
        )
        yield CounterMetricFamily(
            "rbee_worker_requests_started", "Generations started.", value=self.service.started_total
        )
        refused = CounterMetricFamily("rbee_worker_requests_refused", "Requests refused.", labels=["code"])
        refused.add_metric([ErrorCode.ALL_SLOTS_BUSY.value], slots.refused_total)
        yield refused
        yield CounterMetricFamily(
            "rbee_worker_requests_cancelled", "Generations stopped early.", value=health.requests_cancelled_total
        )
        yield CounterMetricFamily(
            "rbee_worker_tokens_generated", "Tokens generated.", value=health.tokens_generated_total
        )


def render(service: WorkerService) -> bytes:
    """The Prometheus text exposition of ``service``."""
    registry = CollectorRegistry(auto_describe=False)
    add_build_info(registry, "worker")
    registry.register(_WorkerCollector(service))
    return generate_latest(registry)
