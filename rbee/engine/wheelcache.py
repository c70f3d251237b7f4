"""Build a llama-cpp-python wheel once per feature set and keep it in a cache folder.

The cache holds one finished wheel per feature set (``<cache>/<key>/``: tagged for its Python and
libc, slimmed, see ``rbee.engine.wheel_tags``) with its build log. Wheels built here and wheels
fetched back from a builder host are stored the same way (``store_wheel``), atomically; each
build adds a line to ``<cache>/builds.jsonl`` (what was built, where, how long).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from rbee.engine.features import FeatureSet
from rbee.engine.wheel_tags import finish_wheel

DEFAULT_CACHE = Path("~/.cache/rbee/wheels")
RUNTIME_REQUIREMENTS = ("diskcache>=5.6",)
"""What the engine needs at run time besides its wheel."""
LEDGER = "builds.jsonl"


class EngineBuildError(Exception):
    """The wheel build failed; the message carries the tail of the build log."""


def _finished_name(features: FeatureSet) -> str:
    return f"llama_cpp_python-{features.version}-{features.python_tag}-none-{features.platform_tag}.whl"


def cached_wheel(features: FeatureSet, cache_dir: Path = DEFAULT_CACHE) -> Path | None:
    """The cached wheel of a feature set, if there is one (a raw wheel of an older cache is finished now)."""
    folder = cache_dir.expanduser() / features.key
    finished = folder / _finished_name(features)
    if finished.is_file():
        return finished
    raw = sorted(p for p in folder.glob("llama_cpp_python-*.whl") if p.name != finished.name)
    if not raw:
        return None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        made = finish_wheel(raw[-1], features, Path(tmp))
        made.replace(finished)
    raw[-1].unlink()
    return finished


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


def log_tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a build log."""
    return "\n".join(text.splitlines()[-lines:])


def store_wheel(
    raw: Path, features: FeatureSet, log: str, cache_dir: Path = DEFAULT_CACHE, *, where: str, seconds: float
) -> Path:
    """File a freshly built ``raw`` wheel (finished: tagged and slimmed) under its key; record the build."""
    cache = cache_dir.expanduser()
    folder = cache / features.key
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rbee-engine-", dir=cache) as tmp:
        staged = Path(tmp) / "out"
        staged.mkdir()
        finish_wheel(raw, features, staged)
        (staged / "build.log").write_text(log)
        if folder.exists():
            shutil.rmtree(folder)
        staged.replace(folder)  # atomic: a half-built wheel never appears in the cache
    entry = {"key": features.key, "where": where, "seconds": round(seconds, 1), "at": time.time()}
    with (cache / LEDGER).open("a") as ledger:
        ledger.write(json.dumps(entry) + "\n")
    return folder / _finished_name(features)


def builds(cache_dir: Path = DEFAULT_CACHE) -> list[dict[str, object]]:
    """Every build the cache has recorded, oldest first."""
    path = cache_dir.expanduser() / LEDGER
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_wheel(features: FeatureSet, cache_dir: Path = DEFAULT_CACHE, jobs: int | None = None) -> Path:
    """Return the cached wheel, building it here first when missing (minutes on a small machine)."""
    found = cached_wheel(features, cache_dir)
    if found is not None:
        return found
    cache = cache_dir.expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rbee-build-", dir=cache) as tmp:
        log = Path(tmp) / "build.log"
        with log.open("w") as sink:
            command = build_command(features, Path(tmp) / "out")
            result = subprocess.run(command, env=build_env(features, jobs), stdout=sink, stderr=subprocess.STDOUT)
        text = log.read_text(errors="replace")
        if result.returncode != 0:
            raise EngineBuildError(f"llama-cpp-python {features.version} ({features.key}) failed to build:\n"
                                   f"{log_tail(text)}")  # fmt: skip
        raw = next((Path(tmp) / "out").glob("llama_cpp_python-*.whl"), None)
        if raw is None:
            raise EngineBuildError(f"the build of {features.key} produced no wheel")
        return store_wheel(raw, features, text, cache_dir, where="control", seconds=time.monotonic() - started)


def install_wheel(wheel: Path, python: str = sys.executable) -> int:
    """Install the engine ``wheel`` and its :data:`RUNTIME_REQUIREMENTS` into ``python``; pip's exit status."""
    command = [python, "-m", "pip", "install", "--quiet", str(wheel), *RUNTIME_REQUIREMENTS]
    return subprocess.run(command, check=False).returncode
