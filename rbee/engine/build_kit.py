"""What a builder host needs to build an engine without reaching PyPI: one folder of files, made here.

A builder host builds llama-cpp-python from its source distribution with ``pip wheel --no-index
--find-links <kit>``; the kit holds that sdist, the build backend (scikit-build-core and its
dependencies) and CMake and Ninja as wheels for the host's platform, and for a CUDA build with the
toolkit from PyPI the ``cuda-toolkit`` wheels. The host itself needs only Python and a C++ compiler.
Kits are cached under ``~/.cache/rbee/buildkit/<name>/`` and reused.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rbee.engine.cuda import BUILD_TOOLKIT, PYPI_CUDA
from rbee.engine.features import FeatureSet
from rbee.engine.wheel_tags import host_platforms

DEFAULT_ROOT = Path("~/.cache/rbee/buildkit")
BUILD_TOOLS = ("scikit-build-core[pyproject]>=0.9.2", "cmake>=3.21", "ninja>=1.11")
"""The build backend of llama-cpp-python and the tools it runs (as wheels, for the builder's platform)."""


class BuildKitError(Exception):
    """The kit could not be downloaded; the message carries pip's complaint."""


@dataclass(frozen=True)
class BuildKit:
    """A folder of files a builder host installs from (``files``: names, sorted)."""

    folder: Path
    files: tuple[str, ...]


def kit_name(features: FeatureSet) -> str:
    """The kit's cache folder: one per llama-cpp-python version, Python, platform and toolkit."""
    toolkit = f"-cuda{features.cuda}" if features.backend == "cuda" and features.cuda == PYPI_CUDA else ""
    return f"{features.version}-py{features.python}-{features.os}_{features.arch}-{features.libc or 'any'}{toolkit}"


def _pip(args: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise BuildKitError(f"pip {' '.join(args[:3])} ... failed:\n{tail}")


def build_kit(features: FeatureSet, root: Path = DEFAULT_ROOT) -> BuildKit:
    """The kit of a feature set, downloaded once (seconds to a minute; the sdist is about 50 MB)."""
    folder = root.expanduser() / kit_name(features)
    stamp = folder / ".complete"
    if not stamp.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _pip(
            [
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(folder),
                f"llama-cpp-python=={features.version}",
            ]
        )
        platforms = [arg for p in host_platforms(features) for arg in ("--platform", p)]
        tools = [*BUILD_TOOLS, *([BUILD_TOOLKIT] if features.backend == "cuda" and features.cuda == PYPI_CUDA else [])]
        _pip(["download", "--only-binary=:all:", *platforms, "--python-version", features.python,
              "--implementation", "cp", "-d", str(folder), *tools])  # fmt: skip
        stamp.write_text("\n".join(sorted(tools)))
    files = tuple(sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))
    return BuildKit(folder, files)
