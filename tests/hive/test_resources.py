"""Resource probing and the RAM preflight."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.resources import check_ram, detect_backends, detect_gpus, probe_resources, required_ram


def test_probe_resources(tmp_path: Path) -> None:
    res = probe_resources(tmp_path)
    assert 0 < res.ram_available_bytes <= res.ram_total_bytes
    assert 0 < res.disk_available_bytes <= res.disk_total_bytes
    assert res.cpu_count >= 1
    assert res.gpus == detect_gpus()


def test_gpu_detection_degrades_to_nothing() -> None:
    gpus = detect_gpus()  # no NVIDIA GPU (or no nvidia-ml-py) on test machines: must not raise
    assert isinstance(gpus, list)


def test_backends() -> None:
    assert detect_backends([])[0] == "cpu"
    assert "cuda" not in detect_backends([])
    gpu = GpuInfo(index=0, name="Fake", memory_total_bytes=1, memory_free_bytes=1)
    assert "cuda" in detect_backends([gpu])


def test_required_ram() -> None:
    assert required_ram(5000, 0) == 6000
    assert required_ram(1000, 500) == 1700


def test_check_ram_passes_when_enough() -> None:
    check_ram("m", 1000, 0, available_bytes=1200)
    check_ram("m", 1024, 0)  # 1 KiB fits on any machine that runs the tests


def test_check_ram_refuses_with_details() -> None:
    with pytest.raises(ApiError) as err:
        check_ram("big", 5000, 100, available_bytes=6000)
    exc = err.value
    assert (exc.status, exc.code) == (507, "INSUFFICIENT_RAM")
    assert exc.details["required_bytes"] == 6100
    assert exc.details["available_bytes"] == 6000
    assert "big" in exc.message and "smaller" in exc.message
    assert exc.body()["error"]["type"] == "insufficient_resources_error"


def test_check_ram_counts_pending_workers() -> None:
    check_ram("m", 1000, 0, available_bytes=3000)
    with pytest.raises(ApiError):
        check_ram("m", 1000, 0, available_bytes=3000, pending_bytes=2000)


def test_check_ram_against_real_memory() -> None:
    huge = psutil.virtual_memory().total * 2
    with pytest.raises(ApiError) as err:
        check_ram("m", huge, 0)
    assert err.value.details["required_bytes"] > err.value.details["available_bytes"]
