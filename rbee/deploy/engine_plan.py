"""A host's engine feature set, decided from its probed facts, and where that engine gets built.

The feature set carries everything the binary depends on (``rbee.engine.features``); for CUDA
hosts the toolkit follows the driver and the architectures follow the GPUs the host serves with
(``rbee.engine.cuda``). The control machine builds a feature set only when it is one: same OS,
libc baseline, arch and Python, CPU backend. Any other is built on a builder host of that set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rbee.deploy.probe import HostFacts
from rbee.engine.cuda import CudaPlanError, choose_toolkit
from rbee.engine.features import EngineBackend, FeatureSet


def host_features(
    facts: HostFacts, backend: EngineBackend, version: str, gpu_indices: Sequence[int]
) -> tuple[FeatureSet, list[str]]:
    """The feature set of a host, and the problems that keep it from having one (e.g. a driver too old)."""
    base = FeatureSet(
        backend=backend,
        arch=facts.arch,
        python=facts.python_abi,
        version=version,
        os=facts.os.lower() or "linux",
        libc=facts.libc,
    )
    if backend != "cuda":
        return base, []
    used = [g for g in facts.gpus if g.index in gpu_indices] or facts.gpus
    try:
        toolkit = choose_toolkit(used, facts.nvcc or None)
    except CudaPlanError as exc:
        return base, [str(exc)]
    return replace(base, cuda=toolkit.major, cuda_architectures=toolkit.architectures), []


def builds_here(features: FeatureSet, control: FeatureSet) -> bool:
    """Whether the control machine (feature set ``control``, CPU) builds ``features`` itself."""
    same = ("os", "libc", "arch", "python")
    return features.backend == "cpu" and all(getattr(features, f) == getattr(control, f) for f in same)
