"""Which CUDA toolkit builds a host's engine, decided from its driver and GPUs (pure functions).

rbee installs the CUDA 13 toolkit from PyPI (``cuda-toolkit`` wheels: nvcc, headers, runtime,
cuBLAS), so a CUDA host needs only the NVIDIA driver; CUDA 13 needs driver branch R580 or newer.
An older driver can still be served by the host's own toolkit (``nvcc`` found by the probe), whose
major version must be one the driver supports. CUDA 12 cannot come from PyPI (its wheels have no
``nvcc``), so that is the only way to a CUDA 12 build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rbee_runtime.common.nvidia_smi import SmiGpu

PYPI_CUDA = "13"
PYPI_TOOLKIT_VERSION = "13.0.2"
"""The ``cuda-toolkit`` release installed from PyPI for building (and its runtime libraries for running)."""
BUILD_TOOLKIT = f"cuda-toolkit[nvcc,crt,nvvm,cudart,cublas,cccl,culibos]=={PYPI_TOOLKIT_VERSION}"
RUNTIME_TOOLKIT = f"cuda-toolkit[cudart,cublas]=={PYPI_TOOLKIT_VERSION}"
RUNTIME_LIB_DIR = "nvidia/cu13/lib"
"""Where the runtime wheels put ``libcudart``/``libcublas``, relative to site-packages."""

# Oldest driver branch of each CUDA major (NVIDIA's CUDA toolkit release notes, table 3).
MIN_DRIVER = {"11": 450, "12": 525, "13": 580}


class CudaPlanError(Exception):
    """No toolkit rbee can use builds for this host; the message says what to do."""


@dataclass(frozen=True)
class CudaToolkit:
    """The toolkit of a CUDA build: from PyPI (``source="pypi"``) or the host's own (``nvcc`` on it)."""

    major: str
    source: str
    architectures: str


def cuda_architectures(gpus: Sequence[SmiGpu]) -> str:
    """CMake's ``CMAKE_CUDA_ARCHITECTURES`` for these GPUs (``86;89``); empty when none reports a capability."""
    sms = {gpu.sm for gpu in gpus if gpu.sm}
    return ";".join(sorted(sms, key=int))


def driver_branch(gpus: Sequence[SmiGpu]) -> int | None:
    """The driver branch the GPUs report (one driver per host; the lowest if they disagree)."""
    branches = [g.driver_major for g in gpus if g.driver_major is not None]
    return min(branches) if branches else None


def choose_toolkit(gpus: Sequence[SmiGpu], host_nvcc: str | None) -> CudaToolkit:
    """The toolkit for a host with these GPUs and, maybe, its own ``nvcc`` (its version, e.g. ``12.4``).

    CUDA 13 from PyPI when the driver is R580+; else the host's toolkit when the driver supports its
    major; else ``CudaPlanError`` naming the driver and what to do.
    """
    archs = cuda_architectures(gpus)
    if not archs:
        raise CudaPlanError("nvidia-smi reports no compute capability for the GPUs; upgrade the NVIDIA driver")
    branch = driver_branch(gpus)
    if branch is None:
        raise CudaPlanError("nvidia-smi reports no driver version; is the NVIDIA driver loaded?")
    if branch >= MIN_DRIVER[PYPI_CUDA]:
        return CudaToolkit(PYPI_CUDA, "pypi", archs)
    host_major = (host_nvcc or "").split(".", 1)[0]
    if host_major and branch >= MIN_DRIVER.get(host_major, 10**6):
        return CudaToolkit(host_major, "host", archs)
    found = f"; the host's own toolkit is CUDA {host_nvcc}, too new for it" if host_nvcc else ""
    raise CudaPlanError(
        f"NVIDIA driver {branch} is too old for CUDA {PYPI_CUDA} (the toolkit rbee installs from PyPI needs driver "
        f"R{MIN_DRIVER[PYPI_CUDA]} or newer){found}. Upgrade the driver to R{MIN_DRIVER[PYPI_CUDA]}+, or install a "
        f"CUDA 12 toolkit on the host (nvcc on PATH or in /usr/local/cuda; driver R{MIN_DRIVER['12']}+), "
        "or use backend: cpu"
    )
