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


def test_a_cuda_host_installs_nvml_and_the_cuda_runtime_beside_rbee() -> None:
    """The wheelhouse of a CUDA host carries NVML (the hive's GPU readings) and, for PyPI's CUDA, the runtime
    libraries the worker loads: the install must put them in the venv, not only ship them."""
    from rbee.deploys.install import extra_requirements
    from rbee.engine.cuda import PYPI_CUDA, RUNTIME_TOOLKIT
    from rbee.engine.features import FeatureSet

    assert extra_requirements(FeatureSet("cpu", "x86_64", "3.11", "0.3.36")) == []
    cuda = extra_requirements(FeatureSet("cuda", "x86_64", "3.11", "0.3.36", cuda=PYPI_CUDA))
    assert any(r.startswith("nvidia-ml-py") for r in cuda) and RUNTIME_TOOLKIT in cuda
    system_cuda = extra_requirements(FeatureSet("cuda", "x86_64", "3.11", "0.3.36", cuda="12"))
    assert any(r.startswith("nvidia-ml-py") for r in system_cuda) and RUNTIME_TOOLKIT not in system_cuda
