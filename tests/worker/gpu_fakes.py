"""The only fakes of the GPU tests: the GPU itself.

- ``fake_nvidia_smi``: an ``nvidia-smi`` executable that prints a recorded output of
  ``tests/fixtures/nvidia-smi`` (or fails like a host without a driver), put first on a process's PATH;
- ``FakeNvml``: the ``pynvml`` calls ``read_nvml`` makes, answering recorded facts (a fact recorded as an
  exception is raised, as NVML raises ``NVMLError_NotSupported``);
- ``SHIM``: ``python tests/worker/gpu_shim.py <worker flags>`` runs the real worker with llama.cpp
  reporting GPU offload (and, with ``RBEE_TEST_GPU=oom``, failing its load as a CUDA build does when
  cudaMalloc runs out of memory);
- ``sized_gguf``: a GGUF whose metadata is that of a real model (layers, widths) and whose size is the
  real file's (sparse), to plan the offload of big models without downloading them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

ROOT = Path(__file__).resolve().parents[2]
NVIDIA_SMI = ROOT / "tests" / "fixtures" / "nvidia-smi"
LLAMA_LOGS = Path(__file__).resolve().parent / "llama-cpp-logs"
SHIM = [sys.executable, str(Path(__file__).resolve().parent / "gpu_shim.py")]
MIB = 1 << 20
GIB = 1 << 30


def smi_output(name: str) -> str:
    """A recorded ``nvidia-smi`` output (``nvidia-smi-2x4090.txt``, ...)."""
    return (NVIDIA_SMI / name).read_text()


def fake_nvidia_smi(folder: Path, recording: str | None, status: int = 0) -> dict[str, str]:
    """Write ``folder/nvidia-smi`` printing ``recording`` (None: the no-driver failure, status 9);
    the environment (PATH) that puts it first."""
    folder.mkdir(parents=True, exist_ok=True)
    source = NVIDIA_SMI / (recording or "nvidia-smi-no-driver.txt")
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat '{source}'\nexit {status if recording else 9}\n")
    script.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


class NVMLError(Exception):
    """What pynvml raises (``NVMLError_NotSupported`` and friends)."""


@dataclass
class NvmlGpu:
    """One GPU as NVML reports it; a field holding an exception is raised when asked for."""

    name: Any
    total: Any
    free: Any
    temperature: Any
    cap: Any
    mig: Any = (0, 0)


@dataclass
class Memory:
    total: int
    free: int
    used: int = 0


@dataclass
class FakeNvml:
    """The pynvml functions ``read_nvml`` calls, answering recorded facts."""

    gpus: list[NvmlGpu]
    driver: Any = "580.95.05"
    init_error: Exception | None = None
    count_error: Exception | None = None
    shutdowns: list[int] = field(default_factory=list)
    NVML_TEMPERATURE_GPU: int = 0
    NVML_DEVICE_MIG_ENABLE: int = 1

    @staticmethod
    def _value(value: Any) -> Any:
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self._value(self.init_error)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns.append(1)

    def nvmlSystemGetDriverVersion(self) -> Any:  # noqa: N802
        return self._value(self.driver)

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._value(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> NvmlGpu:  # noqa: N802
        return self.gpus[index]

    def nvmlDeviceGetName(self, h: NvmlGpu) -> Any:  # noqa: N802
        return self._value(h.name)

    def nvmlDeviceGetMemoryInfo(self, h: NvmlGpu) -> Memory:  # noqa: N802
        return Memory(total=self._value(h.total), free=self._value(h.free))

    def nvmlDeviceGetTemperature(self, h: NvmlGpu, sensor: int) -> Any:  # noqa: N802
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._value(h.temperature)

    def nvmlDeviceGetCudaComputeCapability(self, h: NvmlGpu) -> Any:  # noqa: N802
        return self._value(h.cap)

    def nvmlDeviceGetMigMode(self, h: NvmlGpu) -> Any:  # noqa: N802
        return self._value(h.mig)


#: Llama 2 7B Q4_K_M (TheBloke's llama-2-7b.Q4_K_M.gguf): 32 layers, no grouped-query attention.
LLAMA2_7B_Q4 = {"size": 4_081_004_224, "layers": 32, "n_embd": 4096, "heads": 32, "heads_kv": 32}
#: Llama 3 8B Instruct Q4_K_M: 32 layers, 8 KV heads.
LLAMA3_8B_Q4 = {"size": 4_920_734_016, "layers": 32, "n_embd": 4096, "heads": 32, "heads_kv": 8}


def sized_gguf(path: Path, size: int, layers: int, n_embd: int, heads: int, heads_kv: int) -> Path:
    """A GGUF with a llama's metadata (no tensors), made ``size`` bytes long (sparse)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_embedding_length(n_embd)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads_kv)
    writer.add_context_length(4096)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.truncate(path, size)
    return path
