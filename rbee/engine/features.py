"""What a llama-cpp-python build depends on, and the CMake flags that select it.

Two hosts share an engine wheel exactly when their ``FeatureSet`` is equal: same backend, OS and
libc baseline (glibc version or macOS release), CPU arch, Python ABI, llama-cpp-python version, and
for CUDA the toolkit's major version and the GPUs' compute capabilities.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from dataclasses import dataclass
from typing import Literal

EngineBackend = Literal["cpu", "cuda", "metal"]

# CPU builds are portable (no -march=native) so one wheel serves every host of the same arch.
_CMAKE_ARGS: dict[str, tuple[str, ...]] = {
    "cpu": ("-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF"),  # no libgomp needed on the hosts
    # NO_VMM: no link-time need for the driver's libcuda (a build host may have no driver at all)
    "cuda": ("-DGGML_CUDA=on", "-DGGML_NATIVE=OFF", "-DGGML_CUDA_NO_VMM=ON"),
    "metal": ("-DGGML_METAL=on",),
}


@dataclass(frozen=True)
class FeatureSet:
    """Everything that makes two engine builds differ; hosts with equal feature sets share a wheel.

    ``os``: ``linux`` or ``darwin``; ``libc``: the oldest system the wheel runs on, ``glibc2.36`` or
    ``macos14.0`` (macOS: the major release; empty: unknown); ``python``: ``3.11``; ``cuda``: the CUDA major version
    (``13``); ``cuda_architectures``: CMake's list (``86;89``).
    """

    backend: EngineBackend
    arch: str
    python: str
    version: str
    os: str = "linux"
    libc: str = ""
    cuda: str | None = None
    cuda_architectures: str | None = None

    @property
    def cmake_args(self) -> tuple[str, ...]:
        """The ``CMAKE_ARGS`` of this build."""
        args = _CMAKE_ARGS[self.backend]
        if self.backend == "cuda" and self.cuda_architectures:
            args = (*args, f"-DCMAKE_CUDA_ARCHITECTURES={self.cuda_architectures}")
        if self.backend == "metal" and self.arch == "arm64":
            args = (*args, "-DCMAKE_OSX_ARCHITECTURES=arm64", "-DCMAKE_APPLE_SILICON_PROCESSOR=arm64")
        return args

    @property
    def key(self) -> str:
        """A stable, readable cache key, e.g. ``0.3.36-cpu-linux_x86_64-glibc2.36-py3.11-1a2b3c4d``."""
        digest = hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:8]
        backend: str = self.backend
        if self.backend == "cuda":
            sms = (self.cuda_architectures or "all").replace(";", ".")
            backend = f"cuda{self.cuda or ''}-sm{sms}"
        libc = f"-{self.libc}" if self.libc else ""
        return f"{self.version}-{backend}-{self.os}_{self.arch}{libc}-py{self.python}-{digest}"

    @property
    def gpu_offload(self) -> bool:
        """Whether ``llama_supports_gpu_offload()`` must be true for this build."""
        return self.backend in ("cuda", "metal")

    @property
    def python_tag(self) -> str:
        """The wheel's Python tag (``cp311``): the Python the engine was built and verified with."""
        return "cp" + self.python.replace(".", "")

    @property
    def platform_tag(self) -> str:
        """The wheel's platform: ``manylinux_2_36_x86_64``, ``macosx_14_0_arm64`` (libc unknown: ``linux_<arch>``)."""
        if self.os == "darwin" and self.libc.startswith("macos"):
            major, _, minor = self.libc.removeprefix("macos").partition(".")
            return f"macosx_{major}_{minor or '0'}_{self.arch}"
        if self.libc.startswith("glibc"):
            major, _, minor = self.libc.removeprefix("glibc").partition(".")
            return f"manylinux_{major}_{minor}_{self.arch}"
        return f"{self.os}_{self.arch}"


def local_libc() -> str:
    """This machine's libc baseline in ``FeatureSet.libc`` form (``glibc2.36``, ``macos14.5``, or empty)."""
    if sys.platform == "darwin":
        release = platform.mac_ver()[0]
        return f"macos{release.split('.')[0]}.0" if release else ""
    name, version = platform.libc_ver()
    return f"glibc{version}" if name == "glibc" and version else ""


def local_feature_set(backend: EngineBackend, version: str) -> FeatureSet:
    """The feature set of this machine for a backend (CPU; GPU details come from the host's facts)."""
    return FeatureSet(
        backend=backend,
        arch=platform.machine(),
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        version=version,
        os=platform.system().lower(),
        libc=local_libc(),
    )
