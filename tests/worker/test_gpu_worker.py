"""Real worker processes on the tiny GGUF and their GPU: the offload they decide and show, and how they fail.

Only the GPU is faked: a ``nvidia-smi`` printing a recorded output, and (``gpu_shim.py``) a llama.cpp
that reports GPU offload or runs out of VRAM while loading.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from rbee_runtime.common.ports import free_port
from tests.support.processes import ProcessPool
from tests.support.services import PY, WorkerProc
from tests.worker.gpu_fakes import SHIM, fake_nvidia_smi


def _start(processes: ProcessPool, model: Path, command: list[str], env: dict[str, str] | None = None,
           **flags: object) -> WorkerProc:  # fmt: skip
    port = free_port()
    options = {"worker_id": "w-gpu", "model_id": "rbee-tiny", "model_path": str(model), "host": "127.0.0.1",
               "port": port, "ctx_size": 512, "threads": 1, "backend": "cuda", **flags}  # fmt: skip
    args = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    return WorkerProc(processes.start("w-gpu", [*command, *args], env), port, "w-gpu", 1)


def test_a_cpu_worker_shows_its_offload(processes: ProcessPool, tiny_model_path: Path) -> None:
    worker = _start(processes, tiny_model_path, [PY, "-m", "rbee_runtime.worker"], backend="cpu")
    health = worker.wait_idle()
    assert (health["n_gpu_layers"], health["layers_total"], health["error_code"]) == (0, 2, None)
    assert "n_gpu_layers=0 (0 of 2 layers on the GPU): backend cpu" in worker.log()


@pytest.mark.skipif(llama_cpp.llama_supports_gpu_offload(), reason="this llama-cpp-python is a GPU build")
def test_cuda_on_a_cpu_build_fails_with_gpu_not_available(processes: ProcessPool, tiny_model_path: Path) -> None:
    worker = _start(processes, tiny_model_path, [PY, "-m", "rbee_runtime.worker"])
    assert worker.wait_exit(30) == 1
    assert "load failed [GPU_NOT_AVAILABLE]" in worker.log() and "--backend cpu" in worker.log()


def test_a_cuda_worker_decides_from_its_gpu(processes: ProcessPool, tiny_model_path: Path, tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-2x4090.txt")
    worker = _start(processes, tiny_model_path, SHIM, env, device=1)
    health = worker.wait_idle()
    assert (health["n_gpu_layers"], health["layers_total"]) == (-1, 2), "1620 MiB free: the tiny model fits"
    assert "offload on backend cuda (device 1): n_gpu_layers=-1 (all of 2 layers on the GPU): fits" in worker.log()
    worker.signal(15)
    assert worker.wait_exit() == 0


def test_a_worker_asked_for_layers_takes_them(processes: ProcessPool, tiny_model_path: Path, tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-2x4090.txt")
    worker = _start(processes, tiny_model_path, SHIM, env, device=0, n_gpu_layers=1)
    assert worker.wait_idle()["n_gpu_layers"] == 1


def test_a_missing_device_fails(processes: ProcessPool, tiny_model_path: Path, tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-2x4090.txt")
    worker = _start(processes, tiny_model_path, SHIM, env, device=5)
    assert worker.wait_exit(30) == 1
    assert "load failed [DEVICE_UNAVAILABLE]" in worker.log()


def test_vram_oom_while_loading(processes: ProcessPool, tiny_model_path: Path, tmp_path: Path) -> None:
    env = {**fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-2x4090.txt"), "RBEE_TEST_GPU": "oom"}
    worker = _start(processes, tiny_model_path, SHIM, env, device=1)
    assert worker.wait_exit(30) == 1
    log = worker.log()
    assert "load failed [VRAM_OOM]" in log and "cudaMalloc failed: out of memory" in log
    assert processes.leftovers() == []
