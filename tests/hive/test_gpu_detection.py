"""GPU detection: NVML first (any single fact may fail), ``nvidia-smi`` when NVML is missing or fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.common.gpus import detect_gpus, run_nvidia_smi
from tests.worker.gpu_fakes import MIB, FakeNvml, NVMLError, NvmlGpu, fake_nvidia_smi, smi_output


def _smi(name: str) -> list[GpuInfo]:
    return detect_gpus(nvml=None, run_smi=lambda: smi_output(name))


def test_nvidia_smi_recordings() -> None:
    hot = _smi("nvidia-smi-4090-hot.txt")
    assert [(g.index, g.temperature_c, g.memory_free_bytes // MIB) for g in hot] == [(0, 91, 23012), (1, 52, 22980)]
    assert hot[0] == GpuInfo(index=0, name="NVIDIA GeForce RTX 4090", memory_total_bytes=24564 * MIB,
                             memory_free_bytes=23012 * MIB, temperature_c=91, compute_cap="8.9",
                             driver_version="580.95.05", mig=False)  # fmt: skip
    old = _smi("nvidia-smi-2x4090.txt")  # an older recording: five fields only
    assert [(g.index, g.compute_cap, g.temperature_c, g.driver_version) for g in old] == [
        (0, "8.9", None, None), (1, "8.9", None, None)]  # fmt: skip
    assert _smi("nvidia-smi-3090-old-driver.txt")[0].driver_version == "535.183.01"
    a100, l4 = _smi("nvidia-smi-a100-l4-full.txt")
    assert (a100.name, a100.memory_total_bytes, l4.name, l4.temperature_c) == (
        "NVIDIA A100-SXM4-80GB", 81920 * MIB, "NVIDIA L4", 41)


def test_a_mig_gpu_without_memory_figures_is_kept() -> None:
    mig, plain = _smi("nvidia-smi-h100-mig-full.txt")
    assert (mig.index, mig.mig, mig.temperature_c) == (0, True, None)
    assert (mig.memory_total_bytes, mig.memory_free_bytes) == (0, 0), "memory.free [N/A]: unknown, 0 and 0"
    assert (plain.mig, plain.memory_free_bytes, plain.temperature_c) == (False, 80475 * MIB, 38)


def test_no_driver_and_no_nvidia_smi_mean_no_gpu() -> None:
    assert _smi("nvidia-smi-no-driver.txt") == []
    assert detect_gpus(nvml=None, run_smi=lambda: None) == []


RECORDED = [  # an A100 and an L4 as NVML reported them; the L4's MIG mode query is not supported
    NvmlGpu(name=b"NVIDIA A100-SXM4-80GB", total=81920 * MIB, free=80614 * MIB, temperature=34, cap=(8, 0),
            mig=(0, 0)),
    NvmlGpu(name="NVIDIA L4", total=23034 * MIB, free=22563 * MIB, temperature=41, cap=(8, 9),
            mig=NVMLError("Not Supported")),
]  # fmt: skip


def test_nvml_first() -> None:
    nvml = FakeNvml(RECORDED)
    gpus = detect_gpus(nvml=nvml, run_smi=lambda: pytest.fail("nvidia-smi must not run when NVML answers"))
    assert gpus == detect_gpus(nvml=None, run_smi=lambda: smi_output("nvidia-smi-a100-l4-full.txt"))
    assert nvml.shutdowns == [1]


def test_one_failing_nvml_fact_keeps_the_gpu() -> None:
    failing = NVMLError("Not Supported")
    gpus = [
        NvmlGpu(name="NVIDIA H100 80GB HBM3", total=failing, free=failing, temperature=failing, cap=(9, 0), mig=(1, 1)),
        NvmlGpu(name=failing, total=81559 * MIB, free=80475 * MIB, temperature=38, cap=failing),
    ]
    mig, second = detect_gpus(nvml=FakeNvml(gpus, driver=failing), run_smi=lambda: None)
    assert (mig.name, mig.memory_total_bytes, mig.memory_free_bytes, mig.temperature_c, mig.mig) == (
        "NVIDIA H100 80GB HBM3", 0, 0, None, True)
    assert (second.name, second.compute_cap, second.driver_version, second.memory_free_bytes) == (
        "GPU 1", None, None, 80475 * MIB)


def test_nvml_failing_falls_back_to_nvidia_smi() -> None:
    recorded = smi_output("nvidia-smi-4090-hot.txt")
    expected = detect_gpus(nvml=None, run_smi=lambda: recorded)
    assert detect_gpus(nvml=FakeNvml(RECORDED, init_error=NVMLError("Driver Not Loaded")),
                       run_smi=lambda: recorded) == expected  # fmt: skip
    assert detect_gpus(nvml=FakeNvml(RECORDED, count_error=NVMLError("Unknown Error")),
                       run_smi=lambda: recorded) == expected  # fmt: skip
    assert detect_gpus(nvml=lambda: None, run_smi=lambda: recorded) == expected, "nvidia-ml-py not installed"


def test_nvidia_smi_is_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real query runs the ``nvidia-smi`` on PATH (here one that prints a recorded output)."""
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-a100-l4-full.txt")["PATH"])
    assert run_nvidia_smi() == smi_output("nvidia-smi-a100-l4-full.txt")
    assert [g.name for g in detect_gpus(nvml=None)] == ["NVIDIA A100-SXM4-80GB", "NVIDIA L4"]
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "broken", None)["PATH"])
    assert run_nvidia_smi() is None and detect_gpus(nvml=None) == [], "no driver: exit status 9"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert run_nvidia_smi() is None, "no nvidia-smi at all"
