"""What this machine has: RAM, disk, CPUs, GPUs, backends; and the RAM preflight before a spawn."""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

from rbee_runtime.common.contracts import GpuInfo, Resources
from rbee_runtime.common.errors import ApiError

log = logging.getLogger("rbee.hive.resources")

#: A model needs its file size times this much RAM (weights plus KV cache and runtime buffers).
RAM_FACTOR = 1.2


def detect_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs through nvidia-ml-py; an empty list when it is absent or does not initialise."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        log.debug("NVML did not initialise (%s): no GPUs reported", exc)
        return []
    gpus: list[GpuInfo] = []
    try:
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            handle: Any = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_total_bytes=int(mem.total),
                    memory_free_bytes=int(mem.free),
                )
            )
    except Exception as exc:
        log.warning("NVML query failed (%s): reporting the GPUs found so far", exc)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)
    return gpus


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


def required_ram(model_size_bytes: int, reserve_bytes: int) -> int:
    """RAM a worker of this model needs: model size x 1.2 plus the reserve kept for the system."""
    return int(model_size_bytes * RAM_FACTOR) + reserve_bytes


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
) -> None:
    """Refuse (ApiError 507 ``INSUFFICIENT_RAM``) when available RAM is below what the model needs.

    ``pending_bytes`` is RAM promised to workers that are still loading (not yet visible as used).
    """
    available = int(psutil.virtual_memory().available) if available_bytes is None else available_bytes
    available = max(0, available - pending_bytes)
    required = required_ram(model_size_bytes, reserve_bytes)
    if available >= required:
        return
    raise ApiError(
        507,
        "INSUFFICIENT_RAM",
        f"Not enough free RAM to start a worker for {model_id!r}: it needs {_human(required)} "
        f"(model {_human(model_size_bytes)} × {RAM_FACTOR} + reserve {_human(reserve_bytes)}) but only "
        f"{_human(available)} is available. Stop an idle worker (DELETE /v1/workers/<id>), use a smaller "
        "quantization of the model (e.g. Q4_K_M instead of Q8_0), or lower ram_reserve_bytes in the hive config.",
        {
            "model_id": model_id,
            "required_bytes": required,
            "available_bytes": available,
            "model_size_bytes": model_size_bytes,
            "reserve_bytes": reserve_bytes,
        },
    )
