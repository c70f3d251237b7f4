"""The real worker (``python -m rbee_runtime.worker``) on a machine whose GPU is faked, for the GPU tests.

Only the GPU is fake: llama.cpp reports GPU offload (this machine's llama-cpp-python is a CPU build, so
the layers it is told to offload stay on the CPU), and with ``RBEE_TEST_GPU=oom`` loading the model fails
the way llama.cpp's CUDA build fails when cudaMalloc runs out of memory: it logs the lines of
``llama-cpp-logs/cuda-weights-oom.txt`` through its log callback and llama-cpp-python raises ``ValueError``.
GPU facts (free memory, temperature) come from a fake ``nvidia-smi`` on PATH (``gpu_fakes.fake_nvidia_smi``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rbee_runtime.worker import engine
from rbee_runtime.worker.cli import main

OOM_LOG = Path(__file__).resolve().parent / "llama-cpp-logs" / "cuda-weights-oom.txt"
GGML_LOG_LEVEL_INFO, GGML_LOG_LEVEL_ERROR = 1, 3


class OutOfVramLlama:
    """``llama_cpp.Llama`` whose model does not fit on the GPU."""

    def __init__(self, model_path: str, **kwargs: Any) -> None:
        for line in OOM_LOG.read_text().splitlines(keepends=True):
            failed = "failed" in line or "error" in line
            engine.on_llama_log(GGML_LOG_LEVEL_ERROR if failed else GGML_LOG_LEVEL_INFO, line.encode())
        raise ValueError(f"Failed to load model from file: {model_path}")


llama_cpp.llama_supports_gpu_offload = lambda: True
if os.environ.get("RBEE_TEST_GPU") == "oom":
    llama_cpp.Llama = OutOfVramLlama  # type: ignore[misc,assignment]

if __name__ == "__main__":
    main()
