"""The wheels a host needs to install rbee without reaching PyPI itself (hosts may be air-gapped).

Built on the control machine, once per target (Python version, CPU arch), into
``~/.cache/rbee/wheelhouse/<target>/``; the deploy syncs that folder to each host and installs
with ``pip --no-index --find-links``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import rbee

DEFAULT_ROOT = Path("~/.cache/rbee/wheelhouse")
_PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "linux_x86_64"),
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "linux_aarch64"),
}


class WheelhouseError(Exception):
    """The wheels could not be prepared; the message carries pip's complaint."""


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels for one target, and the fingerprint of its content."""

    folder: Path
    rbee_wheel: Path

    @property
    def fingerprint(self) -> str:
        """sha256 over the names and contents of every wheel (changes when anything changes)."""
        digest = hashlib.sha256()
        for wheel in sorted(self.folder.glob("*.whl")):
            digest.update(wheel.name.encode())
            digest.update(hashlib.sha256(wheel.read_bytes()).digest())
        return digest.hexdigest()


def project_root() -> Path:
    """The checkout rbee runs from (the folder holding pyproject.toml)."""
    return Path(rbee.__file__).resolve().parents[1]


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise WheelhouseError(f"{' '.join(command[:5])} ... failed:\n{tail}")


_PACKAGES = ("rbee", "rbee_runtime")


def _source_fingerprint() -> str:
    """sha256 of everything that goes into the rbee wheel."""
    digest = hashlib.sha256((project_root() / "pyproject.toml").read_bytes())
    for package in _PACKAGES:
        for path in sorted((project_root() / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(project_root())).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _dependencies() -> list[str]:
    import tomllib

    data = tomllib.loads((project_root() / "pyproject.toml").read_text())
    return [*data["project"]["dependencies"], "diskcache>=5.6"]  # + what the engine wheel needs


def build_wheelhouse(python: str, arch: str, root: Path = DEFAULT_ROOT) -> Wheelhouse:
    """Wheels of rbee (from this checkout) and of its dependencies for ``python`` (e.g. 3.11) on ``arch``."""
    if arch not in _PLATFORMS:
        raise WheelhouseError(f"no wheel platform known for arch {arch!r}; supported: {', '.join(_PLATFORMS)}")
    folder = root.expanduser() / f"py{python}-{arch}"
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    platforms = [arg for p in _PLATFORMS[arch] for arg in ("--platform", p)]
    stamp = folder / ".deps"
    deps = "\n".join(sorted(_dependencies()))
    if not stamp.exists() or stamp.read_text() != deps:
        _run([*pip, "download", "--only-binary=:all:", *platforms, "--python-version", python,
              "--implementation", "cp", "-d", str(folder), *_dependencies()])  # fmt: skip
        stamp.write_text(deps)
    source = _source_fingerprint()
    stamp = folder / ".rbee-source"
    current = sorted(folder.glob("rbee-*.whl"))
    if current and stamp.exists() and stamp.read_text() == source:
        return Wheelhouse(folder, current[-1])
    with tempfile.TemporaryDirectory(prefix="rbee-wheel-") as tmp:
        tree = Path(tmp) / "src"
        for name in ("pyproject.toml", "README.md"):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(project_root() / name, tree / name)
        for package in _PACKAGES:
            shutil.copytree(project_root() / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}  # reproducible zip timestamps
        _run([*pip, "wheel", "--no-deps", "-w", str(Path(tmp) / "out"), str(tree)], env)
        built = next((Path(tmp) / "out").glob("rbee-*.whl"))
        for old in current:
            old.unlink()
        target = folder / built.name
        shutil.copy(built, target)
    stamp.write_text(source)
    os.utime(folder)
    return Wheelhouse(folder, target)
