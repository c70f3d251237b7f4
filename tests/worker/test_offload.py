"""The offload decision (how many layers go to the GPU) and the worker's GPU failure codes, on recorded facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee_runtime.common.gpus import gpus_from_smi
from rbee_runtime.common.nvidia_smi import parse_nvidia_smi
from rbee_runtime.common.offload import OVERHEAD_BYTES, kv_bytes_per_layer, plan_offload, read_gguf_shape
from rbee_runtime.worker.gpu import GpuError, classify_load_failure, decide_offload, error_lines
from tests.worker.gpu_fakes import GIB, LLAMA2_7B_Q4, LLAMA3_8B_Q4, LLAMA_LOGS, MIB, sized_gguf, smi_output

SEVEN_B = LLAMA2_7B_Q4["size"]


def test_a_7b_q4_on_a_4090_with_23_gib_free_goes_whole() -> None:
    plan = plan_offload(SEVEN_B, 32, 2048, 23012 * MIB, n_embd_kv=4096)
    assert plan.n_gpu_layers == -1 and plan.full and plan.layers_total == 32
    assert plan.required_bytes == SEVEN_B + 32 * kv_bytes_per_layer(2048, 4096) + OVERHEAD_BYTES
    assert kv_bytes_per_layer(2048, 4096) == 32 * MIB
    assert "fits" in plan.reason


def test_a_7b_q4_with_1_6_gib_free_is_split() -> None:
    plan = plan_offload(SEVEN_B, 32, 2048, 1620 * MIB, n_embd_kv=4096)
    # (1620 - 512) MiB of room, each layer ~118 MiB of weights (file / 33) + 32 MiB of KV cache
    assert plan.n_gpu_layers == 7
    assert "partial" in plan.reason and "7 of 32 layers" in plan.describe()


def test_nothing_fits_next_to_the_overhead() -> None:
    assert plan_offload(SEVEN_B, 32, 2048, 0).n_gpu_layers == 0
    assert plan_offload(SEVEN_B, 32, 2048, 400 * MIB).n_gpu_layers == 0
    plan = plan_offload(SEVEN_B, 32, 2048, OVERHEAD_BYTES + 100 * MIB, n_embd_kv=4096)
    assert plan.n_gpu_layers == 0 and "not one layer fits" in plan.reason


def test_context_slots_and_grouped_query_attention_count() -> None:
    size = LLAMA3_8B_Q4["size"]
    # Llama 3 8B: n_embd_kv 1024, so 8192 tokens of context are 32 MiB per layer, as 2048 are for Llama 2
    assert plan_offload(size, 32, 8192, 7 * GIB, n_embd_kv=1024).full
    almost = plan_offload(size, 32, 8192, 6 * GIB, n_embd_kv=1024)
    assert almost.n_gpu_layers == 32 and not almost.full, "every repeating layer, the output head stays on the CPU"
    assert plan_offload(size, 32, 8192, 7 * GIB, n_embd_kv=4096).n_gpu_layers == 24, "a 4x wider cache costs layers"
    two = plan_offload(size, 32, 8192, 7 * GIB, n_embd_kv=1024, slots=2)
    assert two.n_gpu_layers == 17, "two slots load the weights (and the overhead) twice on the GPU"


def test_unknown_facts_offload_everything() -> None:
    assert plan_offload(SEVEN_B, 32, 2048, None).n_gpu_layers == -1, "free VRAM unknown (MIG): llama.cpp tells"
    plan = plan_offload(SEVEN_B, None, 2048, 1620 * MIB)
    assert plan.n_gpu_layers == -1 and plan.layers_total is None


def test_gguf_shape(tiny_model_path: Path, tmp_path: Path) -> None:
    tiny = read_gguf_shape(tiny_model_path)
    assert (tiny.architecture, tiny.layers, tiny.n_embd, tiny.n_embd_kv) == ("llama", 2, 64, 32)
    big = read_gguf_shape(sized_gguf(tmp_path / "llama3.gguf", **LLAMA3_8B_Q4))
    assert (big.layers, big.n_embd_kv) == (32, 1024)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(Exception):  # noqa: B017 - whatever gguf raises for junk
        read_gguf_shape(tmp_path / "junk.gguf")


# --------------------------------------------------------------------------- the worker's decision


def _decide(model: Path, backend: str = "cuda", device: int = 0, requested: int | None = None,
            supported: bool = True, recording: str | None = "nvidia-smi-2x4090.txt",
            slots: int = 1) -> int:  # fmt: skip
    gpus = gpus_from_smi(parse_nvidia_smi(smi_output(recording))) if recording else None
    plan = decide_offload(backend=backend, device=device, model_path=str(model), ctx_size=2048, slots=slots,
                          requested=requested, gpu_offload_supported=supported, gpus=gpus)  # fmt: skip
    return plan.n_gpu_layers


def test_worker_offload_on_the_2x4090(tmp_path: Path) -> None:
    model = sized_gguf(tmp_path / "llama2-7b.gguf", **LLAMA2_7B_Q4)
    assert _decide(model, device=0) == -1, "23012 MiB free"
    assert _decide(model, device=1) == 7, "1620 MiB free"
    assert _decide(model, device=1, requested=-1) == -1, "--n-gpu-layers wins"
    assert _decide(model, device=1, requested=3) == 3
    assert _decide(model, backend="cpu", supported=False) == 0
    assert _decide(model, backend="metal", recording=None) == -1, "no NVIDIA facts on a Mac"
    assert _decide(model, recording=None) == -1, "no NVML, no nvidia-smi: llama.cpp finds out"


def test_worker_gpu_refusals(tmp_path: Path) -> None:
    model = sized_gguf(tmp_path / "llama2-7b.gguf", **LLAMA2_7B_Q4)
    with pytest.raises(GpuError) as err:
        _decide(model, supported=False)
    assert err.value.code == "GPU_NOT_AVAILABLE" and "--backend cpu" in err.value.message
    with pytest.raises(GpuError) as err:
        _decide(model, device=5)
    assert err.value.code == "DEVICE_UNAVAILABLE" and "0 (NVIDIA GeForce RTX 4090)" in err.value.message
    with pytest.raises(GpuError) as err:
        _decide(model, device=1, slots=8)  # eight copies of the overhead do not fit in 1620 MiB
    assert err.value.code == "VRAM_OOM" and "not one layer" in err.value.message


def test_mig_gpu_without_memory_figures(tmp_path: Path) -> None:
    model = sized_gguf(tmp_path / "llama2-7b.gguf", **LLAMA2_7B_Q4)
    assert _decide(model, device=0, recording="nvidia-smi-h100-mig-full.txt") == -1, "memory [N/A]: not planned"
    assert _decide(model, device=1, recording="nvidia-smi-h100-mig-full.txt") == -1


@pytest.mark.parametrize(
    ("log", "backend", "code"),
    [
        ("cuda-weights-oom.txt", "cuda", "VRAM_OOM"),
        ("cuda-kv-cache-oom.txt", "cuda", "VRAM_OOM"),
        ("cuda-init-failed.txt", "cuda", "CUDA_DEVICE_FAILED"),
        ("cpu-bad-file.txt", "cuda", "MODEL_LOAD_FAILED"),
        ("cuda-weights-oom.txt", "cpu", "MODEL_LOAD_FAILED"),
    ],
)
def test_load_failures_are_classified(log: str, backend: str, code: str) -> None:
    text = (LLAMA_LOGS / log).read_text()
    assert classify_load_failure(backend, text, "ValueError: Failed to load model from file: m.gguf") == code


def test_error_lines_name_the_cause() -> None:
    lines = error_lines((LLAMA_LOGS / "cuda-weights-oom.txt").read_text())
    assert any("cudaMalloc failed: out of memory" in line for line in lines)
    assert not any("offloaded 33/33" in line for line in lines)
