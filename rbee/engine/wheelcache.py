"""Build a llama-cpp-python wheel once per feature set and keep it in a cache folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from rbee.engine.features import FeatureSet

DEFAULT_CACHE = Path("~/.cache/rbee/wheels")
RUNTIME_REQUIREMENTS = ("diskcache>=5.6",)
"""What the engine needs at run time besides its wheel."""


class EngineBuildError(Exception):
    """The wheel build failed; the message carries the tail of the build log."""


def cached_wheel(features: FeatureSet, cache_dir: Path = DEFAULT_CACHE) -> Path | None:
    """The cached wheel of a feature set, if there is one."""
    folder = cache_dir.expanduser() / features.key
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    return wheels[-1] if wheels else None


def build_command(features: FeatureSet, out_dir: Path, python: str = sys.executable) -> list[str]:
    """The command that builds the wheel of ``features`` from source into ``out_dir`` (run with :func:`build_env`)."""
    return [
        python, "-m", "pip", "wheel", "--no-deps", "--no-binary", "llama-cpp-python",
        "--no-cache-dir", "-w", str(out_dir), f"llama-cpp-python=={features.version}",
    ]  # fmt: skip


def build_env(features: FeatureSet, jobs: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the build: ``base`` (default this process's) plus ``CMAKE_ARGS`` and the parallelism."""
    return {
        **(os.environ if base is None else base),
        "CMAKE_ARGS": " ".join(features.cmake_args),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 2),
    }


def build_wheel(features: FeatureSet, cache_dir: Path = DEFAULT_CACHE, jobs: int | None = None) -> Path:
    """Return the cached wheel, building it first when missing (minutes on a small machine)."""
    found = cached_wheel(features, cache_dir)
    if found is not None:
        return found
    folder = cache_dir.expanduser() / features.key
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = build_env(features, jobs)
    with tempfile.TemporaryDirectory(prefix="rbee-engine-", dir=folder.parent) as tmp:
        log = Path(tmp) / "build.log"
        command = build_command(features, Path(tmp) / "out")
        with log.open("w") as sink:
            result = subprocess.run(command, env=env, stdout=sink, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise EngineBuildError(f"llama-cpp-python {features.version} ({features.key}) failed to build:\n{tail}")
        staged = Path(tmp) / "out"
        shutil.copy(log, staged / "build.log")
        staged.replace(folder)  # atomic: a half-built wheel never appears in the cache
    wheel = cached_wheel(features, cache_dir)
    if wheel is None:
        raise EngineBuildError(f"the build of {features.key} produced no wheel")
    return wheel


def install_wheel(wheel: Path, python: str = sys.executable) -> int:
    """Install the engine ``wheel`` and its :data:`RUNTIME_REQUIREMENTS` into ``python``; pip's exit status."""
    command = [python, "-m", "pip", "install", "--quiet", str(wheel), *RUNTIME_REQUIREMENTS]
    return subprocess.run(command, check=False).returncode
