"""A worker's GPU decisions: may it use the GPU at all, how many layers go there, and why a GPU load failed.

Failure codes of a worker asked for backend ``cuda`` or ``metal`` (it exits 1; no silent fallback to the
CPU, the hive shows the code as the worker's ``last_error_code``):

- ``GPU_NOT_AVAILABLE``: its llama.cpp has no GPU offload (a CPU build of llama-cpp-python);
- ``DEVICE_UNAVAILABLE``: ``--device`` is not among the GPUs found here;
- ``VRAM_OOM``: not one layer fits in the GPU's free VRAM, or llama.cpp failed to allocate on the GPU;
- ``CUDA_DEVICE_FAILED``: the GPU is there but llama.cpp could not initialise it (driver, CUDA error).

Each decision is a pure function of the facts it is given, tested on recorded ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.offload import OffloadPlan, plan_offload, try_read_gguf_shape


class GpuError(Exception):
    """A GPU decision refused the load: ``code`` is the worker's failure code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decide_offload(
    *,
    backend: str,
    device: int,
    model_path: str,
    ctx_size: int,
    slots: int,
    requested: int | None,
    gpu_offload_supported: bool,
    gpus: Sequence[GpuInfo] | None,
) -> OffloadPlan:
    """``n_gpu_layers`` of this worker, or ``GpuError``.

    ``requested``: ``--n-gpu-layers`` (None: auto). ``gpus``: the NVIDIA GPUs found (None or empty:
    unknown, e.g. no NVML and no nvidia-smi; llama.cpp then finds out).
    """
    shape = try_read_gguf_shape(model_path) if Path(model_path).is_file() else None
    layers = shape.layers if shape else None
    if backend == "cpu":
        return OffloadPlan(0, layers, 0, None, "backend cpu")
    if not gpu_offload_supported:
        raise GpuError(
            ErrorCode.GPU_NOT_AVAILABLE,
            f"backend {backend} was asked for, but this llama-cpp-python has no GPU offload (a CPU build). "
            "Install a GPU build (e.g. CMAKE_ARGS=-DGGML_CUDA=on pip install llama-cpp-python), or run the "
            "worker with --backend cpu.",
        )
    free: int | None = None
    gpu: GpuInfo | None = None
    if backend == "cuda" and gpus:
        gpu = next((g for g in gpus if g.index == device), None)
        if gpu is None:
            found = ", ".join(f"{g.index} ({g.name})" for g in gpus)
            raise GpuError(
                ErrorCode.DEVICE_UNAVAILABLE,
                f"CUDA device {device} is not on this machine (found: {found}); start the worker with one of "
                "those --device indexes.",
            )
        free = gpu.memory_free_bytes if gpu.memory_total_bytes else None
    size = Path(model_path).stat().st_size if Path(model_path).is_file() else 0
    if requested is not None:
        shown = "all" if requested == -1 else str(requested)
        return OffloadPlan(requested, layers, 0, free, f"{shown} asked for (--n-gpu-layers)")
    plan = plan_offload(size, layers, ctx_size, free, slots=slots, n_embd_kv=shape.n_embd_kv if shape else None)
    if plan.n_gpu_layers == 0 and gpu is not None:
        raise GpuError(
            ErrorCode.VRAM_OOM,
            f"not one layer of the model fits on CUDA device {gpu.index} ({gpu.name}): {plan.reason}. Free VRAM "
            "on that GPU, use a smaller quantization or context, or run with --backend cpu (or --n-gpu-layers 0).",
        )
    return plan


#: llama.cpp log lines of an allocation failure on the GPU (CUDA, Metal, Vulkan).
_OOM = re.compile(
    r"out of memory|cudaMalloc failed|failed to allocate (?:CUDA|Metal|Vulkan|ROCm)|unable to allocate "
    r"(?:CUDA|Metal|Vulkan|ROCm)|failed to allocate buffer for kv cache|failed to allocate compute|"
    r"ggml_gallocr_reserve_n: failed to allocate|OutOfMemory|insufficient memory",
    re.IGNORECASE,
)
#: llama.cpp log lines of a GPU that could not be initialised.
_DEVICE = re.compile(
    r"failed to initialize CUDA|ggml_cuda_init: failed|no CUDA-capable device|CUDA driver version is "
    r"insufficient|invalid device ordinal|CUDA error|cudaSetDevice|ggml_metal_init: error|"
    r"failed to initialize (?:the )?Metal",
    re.IGNORECASE,
)


def classify_load_failure(backend: str, llama_log: str, error: str) -> str:
    """The failure code of a failed load from llama.cpp's log and the exception text.

    ``VRAM_OOM`` for an allocation failure on the GPU, ``CUDA_DEVICE_FAILED`` for a GPU that did not
    initialise, else ``MODEL_LOAD_FAILED`` (also for every failure of backend ``cpu``).
    """
    if backend == "cpu":
        return ErrorCode.MODEL_LOAD_FAILED
    text = f"{llama_log}\n{error}"
    if _OOM.search(text):
        return ErrorCode.VRAM_OOM
    if _DEVICE.search(text):
        return ErrorCode.CUDA_DEVICE_FAILED
    return ErrorCode.MODEL_LOAD_FAILED


def error_lines(llama_log: str, limit: int = 6) -> list[str]:
    """The last lines of llama.cpp's log that say what went wrong (for the failure message)."""
    lines = [line.strip() for line in llama_log.splitlines() if line.strip()]
    bad = [line for line in lines if _OOM.search(line) or _DEVICE.search(line) or "error" in line.lower()
           or "failed" in line.lower()]  # fmt: skip
    return bad[-limit:]
