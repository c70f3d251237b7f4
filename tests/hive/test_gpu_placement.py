"""Which GPU a CUDA worker gets (free VRAM, temperature, MIG) and how many layers go there, on recorded GPUs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_runtime.common.contracts import GpuInfo, RegisterModelRequest, SpawnRequest
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.gpus import detect_gpus
from rbee_runtime.hive import service
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.resources import check_vram, choose_gpu
from rbee_runtime.hive.service import Hive
from rbee_runtime.hive.worker_launch import new_spec, worker_command
from tests.worker.gpu_fakes import GIB, LLAMA2_7B_Q4, MIB, sized_gguf, smi_output


def gpus(recording: str) -> list[GpuInfo]:
    return detect_gpus(nvml=None, run_smi=lambda: smi_output(recording))


def test_the_gpu_with_more_free_memory_wins() -> None:
    assert choose_gpu(4 * GIB, gpus("nvidia-smi-2x4090.txt"), max_temperature_c=85).index == 0
    assert choose_gpu(60 * GIB, gpus("nvidia-smi-a100-l4-full.txt"), max_temperature_c=85).name == (
        "NVIDIA A100-SXM4-80GB")


def test_a_mig_gpu_without_memory_is_kept_but_not_chosen() -> None:
    h100 = gpus("nvidia-smi-h100-mig-full.txt")
    assert [g.index for g in h100] == [0, 1]
    assert choose_gpu(GIB, h100, max_temperature_c=85).index == 1
    assert choose_gpu(60 * GIB, h100).index == 1
    assert check_vram(60 * GIB, h100, 0).index == 0, "asked for by index: memory unknown, not checked"
    with pytest.raises(ApiError) as err:
        choose_gpu(GIB, h100, allowed=[0])
    assert err.value.code == "VRAM_EXHAUSTED", "only the MIG GPU allowed: its VRAM cannot be counted on"


def test_a_hot_gpu_is_skipped() -> None:
    hot = gpus("nvidia-smi-4090-hot.txt")
    assert choose_gpu(4 * GIB, hot, max_temperature_c=85).index == 1, "device 0 has more free but is at 91 °C"
    assert choose_gpu(4 * GIB, hot).index == 0, "no limit"
    assert choose_gpu(4 * GIB, hot, max_temperature_c=95).index == 0
    with pytest.raises(ApiError) as err:
        choose_gpu(4 * GIB, hot, allowed=[0], max_temperature_c=85, model_id="m")
    exc = err.value
    assert (exc.status, exc.code) == (503, "GPU_TOO_HOT")
    assert exc.details == {"device": 0, "gpu": "NVIDIA GeForce RTX 4090", "temperature_c": 91, "max_temperature_c": 85,
                           "temperature_c_by_device": {"0": 91}}  # fmt: skip
    assert "91 °C" in exc.message and "85 °C" in exc.message and "'m'" in exc.message
    assert exc.headers["Retry-After"] == "30"


def test_a_model_that_fits_only_on_a_hot_gpu() -> None:
    hot = gpus("nvidia-smi-4090-hot.txt")
    with pytest.raises(ApiError) as err:  # 22 GiB x 1.2 fits on neither: not a temperature matter
        choose_gpu(22 * GIB, hot, max_temperature_c=85)
    assert err.value.code == "VRAM_EXHAUSTED"
    with pytest.raises(ApiError) as err:  # 18.73 GiB x 1.2 = 22.48 GiB: fits on device 0 (22.47 GiB free) only
        choose_gpu(int(22 * 1024 * MIB / 1.2) + MIB, [hot[0], hot[1].model_copy(update={"memory_free_bytes": GIB})],
                   max_temperature_c=85)  # fmt: skip
    assert err.value.code == "GPU_TOO_HOT" and err.value.details["device"] == 0


def test_a_named_hot_gpu_is_refused() -> None:
    hot = gpus("nvidia-smi-4090-hot.txt")
    with pytest.raises(ApiError) as err:
        check_vram(GIB, hot, 0, max_temperature_c=85)
    assert (err.value.status, err.value.code) == (503, "GPU_TOO_HOT")
    assert "Use device 1 (52 °C) instead" in err.value.message
    assert check_vram(GIB, hot, 1, max_temperature_c=85).index == 1
    assert check_vram(GIB, gpus("nvidia-smi-2x4090.txt"), 0, max_temperature_c=85).index == 0, "temperature unknown"


# --------------------------------------------------------------------------- the hive's preflight


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    """An in-process hive (not started) holding a Llama 2 7B Q4_K_M-sized GGUF as ``llama2``."""
    model = sized_gguf(tmp_path / "llama-2-7b.Q4_K_M.gguf", **LLAMA2_7B_Q4)
    config = HiveConfig(hive_id="unit", data_dir=tmp_path / "data", backend="cuda", ctx_size=2048)
    h = Hive(config)
    h.catalog.register(RegisterModelRequest(model_id="llama2", reference="hf:o/r/m.gguf", local_path=str(model)))
    try:
        yield h
    finally:
        h.catalog.close()
        os.close(h._lock_fd)


def _on(monkeypatch: pytest.MonkeyPatch, found: list[GpuInfo]) -> None:
    monkeypatch.setattr(service, "detect_gpus", lambda: found)


def test_preflight_offloads_everything_when_it_fits(hive: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, gpus("nvidia-smi-2x4090.txt"))
    req = hive.gpu_preflight(SpawnRequest(model_id="llama2"))
    assert (req.device, req.n_gpu_layers) == (0, -1)
    cmd = worker_command(hive.config, new_spec(hive.config, hive.catalog.require("llama2"), req, "cuda", 0, None), 1)
    assert cmd[cmd.index("--n-gpu-layers") + 1] == "-1"


def test_preflight_splits_a_model_that_does_not_fit(hive: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, gpus("nvidia-smi-2x4090.txt"))
    req = hive.gpu_preflight(SpawnRequest(model_id="llama2", device=1))  # 1620 MiB free
    assert (req.device, req.n_gpu_layers) == (1, 7)
    assert hive.gpu_preflight(SpawnRequest(model_id="llama2", device=1, n_gpu_layers=4)).n_gpu_layers == 4
    hive.config.gpu_partial_offload = False
    with pytest.raises(ApiError) as err:
        hive.gpu_preflight(SpawnRequest(model_id="llama2", device=1))
    assert err.value.code == "VRAM_EXHAUSTED", "fail fast when partial offload is off"


def test_preflight_refuses_when_not_one_layer_fits(hive: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    full = [g.model_copy(update={"memory_free_bytes": 300 * MIB}) for g in gpus("nvidia-smi-2x4090.txt")]
    _on(monkeypatch, full)
    with pytest.raises(ApiError) as err:
        hive.gpu_preflight(SpawnRequest(model_id="llama2"))
    assert (err.value.status, err.value.code) == (507, "VRAM_EXHAUSTED")


def test_preflight_skips_the_hot_gpu(hive: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, gpus("nvidia-smi-4090-hot.txt"))
    assert hive.gpu_preflight(SpawnRequest(model_id="llama2")).device == 1
    with pytest.raises(ApiError) as err:
        hive.gpu_preflight(SpawnRequest(model_id="llama2", device=0))
    assert (err.value.status, err.value.code) == (503, "GPU_TOO_HOT")
    hive.config.gpu_max_temperature_c = None
    assert hive.gpu_preflight(SpawnRequest(model_id="llama2")).device == 0
    hive.config.gpu_max_temperature_c = 40
    with pytest.raises(ApiError) as err:
        hive.gpu_preflight(SpawnRequest(model_id="llama2"))
    assert err.value.code == "GPU_TOO_HOT" and err.value.details["temperature_c_by_device"] == {"0": 91, "1": 52}


def test_preflight_on_a_mig_host(hive: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, gpus("nvidia-smi-h100-mig-full.txt"))
    assert hive.gpu_preflight(SpawnRequest(model_id="llama2")).device == 1
    req = hive.gpu_preflight(SpawnRequest(model_id="llama2", device=0))
    assert (req.device, req.n_gpu_layers) == (0, -1), "memory unknown: all layers, llama.cpp says if it fits"
