"""Check an installed engine: ``llama_cpp`` imports, and GPU offload is there exactly for GPU builds."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from rbee.engine.features import FeatureSet

#: Printed by the Python that has the engine: one JSON object with the engine's version and offload support.
ENGINE_PROBE = (
    "import json, llama_cpp; "
    "print(json.dumps({'version': llama_cpp.__version__, "
    "'gpu_offload': bool(llama_cpp.llama_supports_gpu_offload())}))"
)


@dataclass(frozen=True)
class EngineCheck:
    """What the installed engine reported, and every way it differs from the expected build."""

    version: str | None
    gpu_offload: bool | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_engine(python: str, features: FeatureSet, timeout_s: float = 120.0) -> EngineCheck:
    """Import ``llama_cpp`` in ``python`` (a subprocess) and compare it with the build of ``features``."""
    try:
        result = subprocess.run(
            [python, "-c", ENGINE_PROBE], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EngineCheck(None, None, [f"cannot run {python}: {exc}"])
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        return EngineCheck(None, None, [f"`import llama_cpp` fails in {python}: {tail or 'no output'}"])
    try:
        facts = json.loads(result.stdout.strip().splitlines()[-1])
        version, offload = str(facts["version"]), bool(facts["gpu_offload"])
    except (ValueError, KeyError, IndexError) as exc:
        return EngineCheck(None, None, [f"unexpected output of the engine probe: {result.stdout[-200:]!r} ({exc})"])
    problems = []
    if version != features.version:
        problems.append(f"llama-cpp-python {version} is installed, the {features.key} build is {features.version}")
    if offload != features.gpu_offload:
        problems.append(
            f"llama_supports_gpu_offload() is {offload}, a {features.backend} build must report {features.gpu_offload}"
        )
    return EngineCheck(version, offload, problems)
