"""The NVIDIA GPUs of this machine: NVML (nvidia-ml-py) first, ``nvidia-smi`` when NVML is missing or fails.

Both the hive (its resources, heartbeats and VRAM preflight) and a worker (its offload decision) ask
:func:`detect_gpus`. Every fact is read on its own: a field the driver cannot report (temperature or
memory of a MIG-enabled GPU, a compute capability an old driver does not know) leaves that field
empty and keeps the GPU. A GPU without memory figures is reported with 0 total and 0 free.

The readers take the NVML module and the ``nvidia-smi`` runner as arguments, so the tests feed them
recorded facts (``tests/fixtures/nvidia-smi``) instead of a GPU.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.common.nvidia_smi import MIB, NVIDIA_SMI_QUERY, SmiGpu, parse_nvidia_smi

log = logging.getLogger("rbee.gpus")

T = TypeVar("T")
#: Runs ``NVIDIA_SMI_QUERY``; its stdout, or None when nvidia-smi is absent or fails.
SmiRunner = Callable[[], str | None]
SMI_TIMEOUT_S = 10.0


def _field(what: str, index: int, read: Callable[..., T], *args: Any) -> T | None:
    """One NVML fact, ``read(*args)``; None when the driver cannot report it (the GPU is kept)."""
    try:
        return read(*args)
    except Exception as exc:
        log.debug("NVML: %s of GPU %d not available (%s)", what, index, exc)
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvml(nvml: Any) -> list[GpuInfo]:
    """The GPUs NVML reports (``nvml``: the ``pynvml`` module, initialised); raises when it cannot count them."""
    gpus: list[GpuInfo] = []
    driver = _field("driver version", -1, nvml.nvmlSystemGetDriverVersion)
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = _field("handle", index, nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        name = _field("name", index, nvml.nvmlDeviceGetName, handle)
        mem = _field("memory", index, nvml.nvmlDeviceGetMemoryInfo, handle)
        temperature = _field("temperature", index, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        cap = _field("compute capability", index, nvml.nvmlDeviceGetCudaComputeCapability, handle)
        mig = _field("MIG mode", index, nvml.nvmlDeviceGetMigMode, handle)
        gpus.append(
            GpuInfo(
                index=index,
                name=_text(name) if name is not None else f"GPU {index}",
                memory_total_bytes=int(mem.total) if mem is not None else 0,
                memory_free_bytes=int(mem.free) if mem is not None else 0,
                temperature_c=int(temperature) if temperature is not None else None,
                compute_cap=f"{cap[0]}.{cap[1]}" if cap is not None else None,
                driver_version=_text(driver) if driver is not None else None,
                mig=bool(mig is not None and int(mig[0]) == int(getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1))),
            )
        )
    return gpus


def _known(gpu: SmiGpu) -> int:
    """1 when both memory figures are known, else 0 (a total without its free part says nothing usable)."""
    return int(gpu.memory_total_mib is not None and gpu.memory_free_mib is not None)


def gpus_from_smi(rows: list[SmiGpu]) -> list[GpuInfo]:
    """``nvidia-smi`` rows as ``GpuInfo`` (MiB to bytes; memory with a figure missing is 0 total, 0 free)."""
    return [
        GpuInfo(
            index=g.index,
            name=g.name,
            memory_total_bytes=_known(g) * (g.memory_total_mib or 0) * MIB,
            memory_free_bytes=_known(g) * (g.memory_free_mib or 0) * MIB,
            temperature_c=g.temperature_c,
            compute_cap=g.compute_cap,
            driver_version=g.driver_version,
            mig=g.mig,
        )
        for g in rows
    ]


def run_nvidia_smi() -> str | None:
    """stdout of ``NVIDIA_SMI_QUERY``; None when nvidia-smi is not installed, fails or hangs."""
    try:
        done = subprocess.run(
            shlex.split(NVIDIA_SMI_QUERY), capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi did not run (%s)", exc)
        return None
    if done.returncode != 0:
        log.debug("nvidia-smi exited %d: %s", done.returncode, (done.stdout + done.stderr).strip()[:300])
        return None
    return done.stdout


def _import_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def detect_gpus(nvml: Any = _import_nvml, run_smi: SmiRunner = run_nvidia_smi) -> list[GpuInfo]:
    """The NVIDIA GPUs here: NVML, else ``nvidia-smi``; ``[]`` when neither reports one.

    ``nvml``: the ``pynvml`` module, or a callable returning it (None: not installed).
    """
    module = nvml() if callable(nvml) and not hasattr(nvml, "nvmlInit") else nvml
    if module is not None:
        try:
            module.nvmlInit()
        except Exception as exc:
            log.debug("NVML did not initialise (%s): asking nvidia-smi", exc)
        else:
            try:
                return read_nvml(module)
            except Exception as exc:
                log.warning("NVML query failed (%s): asking nvidia-smi", exc)
            finally:
                try:
                    module.nvmlShutdown()
                except Exception:
                    log.debug("nvmlShutdown failed", exc_info=True)
    output = run_smi()
    return gpus_from_smi(parse_nvidia_smi(output)) if output else []
