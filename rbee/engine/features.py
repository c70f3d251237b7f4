"""What a llama-cpp-python build depends on, and the CMake flags that select it."""

from __future__ import annotations

import hashlib
import platform
import sys
from dataclasses import dataclass
from typing import Literal

EngineBackend = Literal["cpu", "cuda", "metal"]

# CPU builds are portable (AVX2 baseline, no -march=native) so one wheel serves every x86-64-v3 host.
_CMAKE_ARGS: dict[str, tuple[str, ...]] = {
    "cpu": ("-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF"),  # no libgomp needed on the hosts
    "cuda": ("-DGGML_CUDA=on", "-DGGML_NATIVE=OFF"),
    "metal": ("-DGGML_METAL=on",),
}


@dataclass(frozen=True)
class FeatureSet:
    """Everything that makes two engine builds differ; hosts with equal feature sets share a wheel."""

    backend: EngineBackend
    arch: str
    python: str
    version: str
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
        """A stable, readable cache key, e.g. ``0.3.36-cpu-x86_64-py3.11-1a2b3c4d``."""
        digest = hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:8]
        return f"{self.version}-{self.backend}-{self.arch}-py{self.python}-{digest}"

    @property
    def gpu_offload(self) -> bool:
        """Whether ``llama_supports_gpu_offload()`` must be true for this build."""
        return self.backend in ("cuda", "metal")


def local_feature_set(backend: EngineBackend, version: str) -> FeatureSet:
    """The feature set of this machine for a backend."""
    return FeatureSet(
        backend=backend,
        arch=platform.machine(),
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        version=version,
    )
