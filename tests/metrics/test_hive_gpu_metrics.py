"""The hive's GPU gauges: one series per GPU the detection reports, none on a host without one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.metrics import HiveMetrics
from rbee_runtime.hive.service import Hive
from tests.prometheus import sample_value


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    """An in-process hive (not started)."""
    h = Hive(HiveConfig(hive_id="unit", data_dir=tmp_path / "data"))
    try:
        yield h
    finally:
        h.catalog.close()
        os.close(h._lock_fd)


def _gpu_value(text: str, metric: str, gpu: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and sample.labels.get("gpu") == gpu:
                return float(sample.value)
    return None


def test_gpu_gauges_per_gpu(hive: Hive) -> None:
    gpus = [
        GpuInfo(index=0, name="A", memory_total_bytes=80, memory_free_bytes=30, temperature_c=61),
        GpuInfo(index=1, name="B", memory_total_bytes=0, memory_free_bytes=0),  # MIG: nothing reported
    ]
    text = HiveMetrics(hive, lambda: gpus).render().decode()
    assert _gpu_value(text, "rbee_hive_gpu_memory_used_bytes", "0") == 50
    assert _gpu_value(text, "rbee_hive_gpu_memory_total_bytes", "0") == 80
    assert _gpu_value(text, "rbee_hive_gpu_temperature_celsius", "0") == 61
    assert 'rbee_hive_gpu_memory_total_bytes{gpu="0",name="A"}' in text
    assert _gpu_value(text, "rbee_hive_gpu_temperature_celsius", "1") is None
    assert _gpu_value(text, "rbee_hive_gpu_memory_total_bytes", "1") == 0


def test_no_gpu_series_without_a_gpu(hive: Hive) -> None:
    text = HiveMetrics(hive, list).render().decode()
    assert "rbee_hive_gpu_memory_used_bytes{" not in text
    assert sample_value(text, "rbee_hive_workers", state="idle") == 0
    assert 'rbee_build_info{python="' in text and 'service="hive"' in text
