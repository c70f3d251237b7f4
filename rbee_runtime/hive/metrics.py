"""The hive's ``/metrics`` (Prometheus text): its GPUs, its workers by state and their restarts.

GPU figures are read at each scrape (NVML, else ``nvidia-smi``); a host without an NVIDIA GPU exports
no GPU series. Labels are bounded: a GPU index, a worker state, a model id of the hive's own config
or catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rbee_runtime.common.contracts import GpuInfo, WorkerState
from rbee_runtime.common.gpus import detect_gpus
from rbee_runtime.common.metrics_build_info import add_build_info
from rbee_runtime.hive.service import Hive


class _HiveCollector(Collector):
    def __init__(self, hive: Hive, gpus: Callable[[], list[GpuInfo]]) -> None:
        self.hive = hive
        self.gpus = gpus

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        used = GaugeMetricFamily("rbee_hive_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
        total = GaugeMetricFamily("rbee_hive_gpu_memory_total_bytes", "GPU memory.", labels=["gpu", "name"])
        temp = GaugeMetricFamily("rbee_hive_gpu_temperature_celsius", "GPU temperature.", labels=["gpu", "name"])
        for g in self.gpus():
            labels = [str(g.index), g.name]
            used.add_metric(labels, max(0, g.memory_total_bytes - g.memory_free_bytes))
            total.add_metric(labels, g.memory_total_bytes)
            if g.temperature_c is not None:
                temp.add_metric(labels, g.temperature_c)
        yield from (used, total, temp)
        workers = self.hive.registry.list()
        states = GaugeMetricFamily("rbee_hive_workers", "Workers of this hive, by state.", labels=["state"])
        for state in WorkerState:
            states.add_metric([str(state)], sum(1 for w in workers if w.state == state))
        yield states
        restarts = CounterMetricFamily(
            "rbee_hive_worker_restarts", "Workers restarted after a crash, by model.", labels=["model"]
        )
        for model, n in sorted(self.hive.supervisor.managed.restarts_total.items()):
            restarts.add_metric([model], n)
        yield restarts
        yield GaugeMetricFamily(
            "rbee_hive_models", "Models in this hive's catalog.", value=len(self.hive.catalog.model_ids())
        )


class HiveMetrics:
    """The hive's registry: its collector and ``rbee_build_info``."""

    def __init__(self, hive: Hive, gpus: Callable[[], list[GpuInfo]] = detect_gpus) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        add_build_info(self.registry, "hive")
        self.registry.register(_HiveCollector(hive, gpus))

    def render(self) -> bytes:
        """The Prometheus text exposition (blocking: GPU detection; call it in a thread)."""
        return generate_latest(self.registry)
