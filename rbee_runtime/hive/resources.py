"""What this machine has: RAM, disk, CPUs, GPUs, backends; and the RAM, VRAM and GPU temperature preflights.

The preflights are pure functions of the facts they are given (``check_ram``, ``check_vram``,
``choose_gpu``), so they are tested on recorded facts as well as on this machine's. GPUs are
detected by :func:`rbee_runtime.common.gpus.detect_gpus` (NVML, else ``nvidia-smi``).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from rbee_runtime.common.contracts import GpuInfo, Resources
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.gpus import detect_gpus

__all__ = [
    "RAM_FACTOR", "VRAM_FACTOR", "check_gpu_temperature", "check_ram", "check_vram", "choose_gpu", "detect_backends",
    "detect_gpus", "is_too_hot", "probe_resources", "required_ram", "required_vram",
]  # fmt: skip

log = logging.getLogger("rbee.hive.resources")

#: A model needs its file size times this much RAM (weights plus KV cache and runtime buffers).
RAM_FACTOR = 1.2
#: A model offloaded to a GPU needs its file size times this much VRAM (weights, KV cache, CUDA buffers).
VRAM_FACTOR = 1.2


def detect_backends(gpus: list[GpuInfo]) -> list[str]:
    """Backends a worker can use here: ``cpu`` always, ``cuda`` with NVIDIA GPUs, ``metal`` on Apple silicon."""
    backends = ["cpu"]
    if gpus:
        backends.append("cuda")
    if sys.platform == "darwin" and platform.machine() == "arm64":
        backends.append("metal")
    return backends


def probe_resources(data_dir: Path, gpus: list[GpuInfo] | None = None) -> Resources:
    """RAM, disk (of the filesystem holding ``data_dir``), CPU count and GPUs."""
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(data_dir if data_dir.exists() else data_dir.anchor or "/"))
    return Resources(
        ram_total_bytes=int(mem.total),
        ram_available_bytes=int(mem.available),
        disk_total_bytes=int(disk.total),
        disk_available_bytes=int(disk.free),
        cpu_count=os.cpu_count() or 1,
        gpus=detect_gpus() if gpus is None else gpus,
    )


def required_ram(model_size_bytes: int, reserve_bytes: int, kv_bytes: int = 0) -> int:
    """RAM a worker of this model needs: model size x 1.2, its KV caches, plus the reserve kept for the system."""
    return int(model_size_bytes * RAM_FACTOR) + kv_bytes + reserve_bytes


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_ram(
    model_id: str,
    model_size_bytes: int,
    reserve_bytes: int,
    available_bytes: int | None = None,
    pending_bytes: int = 0,
    kv_bytes: int = 0,
    kv_for: str = "",
) -> None:
    """Refuse (ApiError 507 ``INSUFFICIENT_RAM``) when available RAM is below what the model needs.

    ``pending_bytes`` is RAM promised to workers that are still loading (not yet visible as used);
    ``kv_bytes`` the KV caches of the new worker (``kv_for`` says of what, e.g. ``ctx_size 4096 x 2 slots``).
    """
    available = int(psutil.virtual_memory().available) if available_bytes is None else available_bytes
    available = max(0, available - pending_bytes)
    required = required_ram(model_size_bytes, reserve_bytes, kv_bytes)
    if available >= required:
        return
    kv = f" + KV cache {_human(kv_bytes)}{f' ({kv_for})' if kv_for else ''}" if kv_bytes else ""
    lower = "Lower ctx_size or slots, stop" if kv_bytes else "Stop"
    raise ApiError(
        507,
        ErrorCode.INSUFFICIENT_RAM,
        f"Not enough free RAM to start a worker for {model_id!r}: it needs {_human(required)} "
        f"(model {_human(model_size_bytes)} × {RAM_FACTOR}{kv} + reserve {_human(reserve_bytes)}) but only "
        f"{_human(available)} is available. {lower} an idle worker (DELETE /v1/workers/<id>), use a "
        "smaller quantization of the model (e.g. Q4_K_M instead of Q8_0), or lower ram_reserve_bytes in the hive "
        "config.",
        {
            "model_id": model_id,
            "required_bytes": required,
            "available_bytes": available,
            "model_size_bytes": model_size_bytes,
            "kv_cache_bytes": kv_bytes,
            "reserve_bytes": reserve_bytes,
        },
    )


# --------------------------------------------------------------------------- VRAM


def required_vram(model_size_bytes: int) -> int:
    """VRAM a CUDA worker of this model needs: model size x 1.2."""
    return int(model_size_bytes * VRAM_FACTOR)


def _free_after(gpu: GpuInfo, pending: Mapping[int, int] | None) -> int:
    return max(0, gpu.memory_free_bytes - (pending or {}).get(gpu.index, 0))


def _vram_details(model_size_bytes: int, gpu: GpuInfo, free: int) -> dict[str, Any]:
    return {
        "device": gpu.index,
        "gpu": gpu.name,
        "required_bytes": required_vram(model_size_bytes),
        "available_bytes": free,
        "total_bytes": gpu.memory_total_bytes,
        "model_size_bytes": model_size_bytes,
    }


_VRAM_HINT = (
    "a smaller quantization of the model (e.g. Q4_K_M instead of Q8_0), stop a worker on that GPU, "
    "or run it with backend cpu."
)


def is_too_hot(gpu: GpuInfo, max_temperature_c: int | None) -> bool:
    """Whether ``gpu`` is over the limit (a GPU whose temperature is unknown is not too hot)."""
    return max_temperature_c is not None and gpu.temperature_c is not None and gpu.temperature_c > max_temperature_c


#: Seconds a client is told to wait before asking again for a GPU that is too hot.
TOO_HOT_RETRY_AFTER_S = 30


def _too_hot(hot: Sequence[GpuInfo], max_temperature_c: int, model: str, alternative: str = "") -> ApiError:
    shown = ", ".join(f"device {g.index} ({g.name}) at {g.temperature_c} °C" for g in hot)
    return ApiError(
        503,
        ErrorCode.GPU_TOO_HOT,
        f"No worker for {model} is placed on a GPU over {max_temperature_c} °C: {shown}. "
        f"{alternative}Retry once it has cooled down, check its cooling, or raise gpu_max_temperature_c "
        "in the hive config.",
        {
            "device": hot[0].index,
            "gpu": hot[0].name,
            "temperature_c": hot[0].temperature_c,
            "max_temperature_c": max_temperature_c,
            "temperature_c_by_device": {str(g.index): g.temperature_c for g in hot},
        },
        headers={"Retry-After": str(TOO_HOT_RETRY_AFTER_S)},
    )


def check_gpu_temperature(
    gpu: GpuInfo, max_temperature_c: int | None, model_id: str | None = None, gpus: Sequence[GpuInfo] = ()
) -> None:
    """503 ``GPU_TOO_HOT`` (details ``device``, ``temperature_c``, ``max_temperature_c``) when ``gpu`` is too hot."""
    if max_temperature_c is None or not is_too_hot(gpu, max_temperature_c):
        return
    cool = [g for g in gpus if g.index != gpu.index and not is_too_hot(g, max_temperature_c)]
    alternative = f"Use device {cool[0].index} ({cool[0].temperature_c} °C) instead. " if cool else ""
    model = repr(model_id) if model_id else "the model"
    raise _too_hot([gpu], max_temperature_c, model, alternative)


def check_vram(
    model_size_bytes: int,
    gpus: Sequence[GpuInfo],
    device: int,
    *,
    pending: Mapping[int, int] | None = None,
    model_id: str | None = None,
    max_temperature_c: int | None = None,
) -> GpuInfo:
    """The GPU ``device`` when the model fits in its free VRAM (less ``pending``: VRAM promised to loading
    workers, by device); else ApiError 507 ``VRAM_EXHAUSTED`` (details ``required_bytes``, ``available_bytes``),
    503 ``GPU_TOO_HOT`` when the GPU is over ``max_temperature_c``, or 400 ``DEVICE_UNAVAILABLE`` when there
    is no such GPU. A GPU whose memory is unknown (0 total, e.g. MIG) is not checked.
    """
    model = repr(model_id) if model_id else "the model"
    gpu = next((g for g in gpus if g.index == device), None)
    if gpu is None:
        present = sorted(g.index for g in gpus)
        options = " or ".join(f"device {i}" for i in present) or "backend cpu (no CUDA device was found)"
        raise ApiError(
            400,
            ErrorCode.DEVICE_UNAVAILABLE,
            f"CUDA device {device} is not available on this machine. Try {options}.",
            {"device": device, "devices": present},
        )
    check_gpu_temperature(gpu, max_temperature_c, model_id, gpus)
    if gpu.memory_total_bytes == 0:  # the driver does not report its memory (e.g. MIG): llama.cpp will tell
        log.info("CUDA device %d (%s) reports no memory figures: VRAM not checked", gpu.index, gpu.name)
        return gpu
    free = _free_after(gpu, pending)
    required = required_vram(model_size_bytes)
    if free >= required:
        return gpu
    elsewhere = [g for g in gpus if g.index != gpu.index and _free_after(g, pending) >= required]
    other = f"device {elsewhere[0].index} ({_human(_free_after(elsewhere[0], pending))} free), " if elsewhere else ""
    raise ApiError(
        507,
        ErrorCode.VRAM_EXHAUSTED,
        f"Insufficient VRAM on CUDA device {gpu.index} ({gpu.name}) for {model}: it needs {_human(required)} "
        f"(model {_human(model_size_bytes)} × {VRAM_FACTOR}) but only {_human(free)} of "
        f"{_human(gpu.memory_total_bytes)} is free. Use {other}{_VRAM_HINT}",
        _vram_details(model_size_bytes, gpu, free),
    )


def choose_gpu(
    model_size_bytes: int,
    gpus: Sequence[GpuInfo],
    *,
    allowed: Sequence[int] | None = None,
    pending: Mapping[int, int] | None = None,
    model_id: str | None = None,
    max_temperature_c: int | None = None,
) -> GpuInfo:
    """The GPU (among ``allowed`` indexes, default all, and not over ``max_temperature_c``) with the most
    free VRAM, if the model fits there.

    Ties go to the lower index; a GPU whose memory is unknown (0 free, e.g. MIG) is only chosen for a model
    of no size. 503 ``GPU_TOO_HOT`` when the model fits only on GPUs that are too hot; 507 ``VRAM_EXHAUSTED``
    (details also list every candidate's free bytes) when it fits nowhere; 400 ``DEVICE_UNAVAILABLE`` when
    there is no candidate GPU at all.
    """
    candidates = [g for g in gpus if allowed is None or g.index in allowed]
    if not candidates:
        raise ApiError(
            400,
            ErrorCode.DEVICE_UNAVAILABLE,
            "No CUDA device is available for this worker"
            + (f" (allowed devices {list(allowed)}, found {sorted(g.index for g in gpus)})" if allowed else "")
            + ". Use backend cpu, or check the GPUs with nvidia-smi.",
            {"devices": sorted(g.index for g in gpus), "allowed": list(allowed) if allowed is not None else None},
        )
    required = required_vram(model_size_bytes)
    model = repr(model_id) if model_id else "the model"
    fitting = [g for g in candidates if _free_after(g, pending) >= required]
    cool_fitting = [g for g in fitting if not is_too_hot(g, max_temperature_c)]
    if cool_fitting:
        return min(cool_fitting, key=lambda g: (-_free_after(g, pending), g.index))
    if fitting and max_temperature_c is not None:
        raise _too_hot(fitting, max_temperature_c, model)
    cool = [g for g in candidates if not is_too_hot(g, max_temperature_c)] or candidates
    best = min(cool, key=lambda g: (-_free_after(g, pending), g.index))
    free = _free_after(best, pending)
    raise ApiError(
        507,
        ErrorCode.VRAM_EXHAUSTED,
        f"No CUDA device has enough free VRAM for {model}: it needs {_human(required)} (model "
        f"{_human(model_size_bytes)} × {VRAM_FACTOR}); the most free is {_human(free)} of "
        f"{_human(best.memory_total_bytes)} on device {best.index} ({best.name}). Use {_VRAM_HINT}",
        {
            **_vram_details(model_size_bytes, best, free),
            "free_bytes_by_device": {str(g.index): _free_after(g, pending) for g in candidates},
        },
    )
