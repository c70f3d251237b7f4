"""The install step's one check (``rbee/deploys/install.py``) run for real on this machine's runtime and CPU engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rbee.deploys.install import check_script

pytestmark = pytest.mark.engine


def run_check(gpu_offload: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", check_script(gpu_offload)], capture_output=True, text=True, timeout=60)


def test_the_check_passes_when_the_runtime_imports_and_the_engine_is_the_planned_build() -> None:
    done = run_check(gpu_offload=False)  # this machine's engine is a CPU build
    assert done.returncode == 0, done.stderr


def test_the_check_fails_naming_an_engine_that_is_not_the_planned_build() -> None:
    done = run_check(gpu_offload=True)  # a CUDA host that got a CPU wheel
    assert done.returncode == 1
    assert done.stderr.strip() == "llama_supports_gpu_offload() is False, expected True"
