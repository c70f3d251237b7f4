"""Which backend a machine can use, decided from what its tools print (pure functions + one probe)."""

from __future__ import annotations

import platform
import shutil
import subprocess

from rbee.engine.features import EngineBackend
from rbee_runtime.common.nvidia_smi import NVIDIA_SMI_QUERY, SmiGpu, parse_nvidia_smi

DetectedGpu = SmiGpu
"""One GPU as ``nvidia-smi`` reports it (see ``rbee_runtime.common.nvidia_smi``)."""

__all__ = ["NVIDIA_SMI_QUERY", "DetectedGpu", "choose_backend", "local_backend", "local_gpus", "parse_nvidia_smi"]


def choose_backend(system: str, machine: str, gpus: list[SmiGpu]) -> EngineBackend:
    """``auto`` resolved: CUDA when NVIDIA GPUs answer, Metal on Apple silicon, else CPU."""
    if gpus:
        return "cuda"
    if system == "Darwin" and machine == "arm64":
        return "metal"
    return "cpu"


def local_gpus() -> list[SmiGpu]:
    """The NVIDIA GPUs of this machine (empty without a working ``nvidia-smi``)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(NVIDIA_SMI_QUERY.split(), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []


def local_backend() -> EngineBackend:
    """The backend ``auto`` means on this machine."""
    return choose_backend(platform.system(), platform.machine(), local_gpus())
