"""Which backend a machine can use, decided from what its tools print (pure functions + one probe)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass

from rbee.engine.features import EngineBackend

NVIDIA_SMI_QUERY = (
    "nvidia-smi --query-gpu=index,name,memory.total,memory.free,compute_cap --format=csv,noheader,nounits"
)


@dataclass(frozen=True)
class DetectedGpu:
    """One GPU as ``nvidia-smi`` reports it (memory in MiB)."""

    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int
    compute_cap: str


def parse_nvidia_smi(output: str) -> list[DetectedGpu]:
    """Parse the CSV of ``NVIDIA_SMI_QUERY``; lines that are not GPU rows are skipped."""
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        try:
            gpus.append(DetectedGpu(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3])), parts[4]))
        except ValueError:
            continue
    return gpus


def choose_backend(system: str, machine: str, gpus: list[DetectedGpu]) -> EngineBackend:
    """``auto`` resolved: CUDA when NVIDIA GPUs answer, Metal on Apple silicon, else CPU."""
    if gpus:
        return "cuda"
    if system == "Darwin" and machine == "arm64":
        return "metal"
    return "cpu"


def local_gpus() -> list[DetectedGpu]:
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
