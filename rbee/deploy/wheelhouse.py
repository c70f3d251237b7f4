"""The wheels a host needs to install rbee without reaching PyPI itself (hosts may be air-gapped).

Built on the control machine, once per target (Python version, OS, CPU arch, and the extras of its
engine: nvidia-ml-py and the CUDA runtime libraries on CUDA hosts), into
``~/.cache/rbee/wheelhouse/<target>/``; the deploy ships that folder to each host as one archive and installs
with ``pip --no-index --find-links``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import rbee
from rbee.engine.cuda import PYPI_CUDA, RUNTIME_TOOLKIT
from rbee.engine.features import FeatureSet

DEFAULT_ROOT = Path("~/.cache/rbee/wheelhouse")
_PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "linux_x86_64"),
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "linux_aarch64"),
}


GPU_MONITORING = "nvidia-ml-py>=12"
"""How a hive on a CUDA host reads its GPUs (NVML)."""


@dataclass(frozen=True)
class WheelhouseTarget:
    """What a wheelhouse is for: Python ``3.11``, ``linux``/``darwin``, arch, the macOS release (``14``) and extras."""

    python: str
    os: str
    arch: str
    macos: str = ""
    extras: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Its folder and key: ``py3.11-x86_64`` (Linux CPU), ``py3.13-x86_64-cuda13``, ``py3.12-macos14-arm64``."""
        where = f"macos{self.macos}-{self.arch}" if self.os == "darwin" else self.arch
        toolkit = [e.split("==")[-1].split(".")[0] for e in self.extras if e.startswith("cuda-toolkit")]
        gpu = f"-cuda{toolkit[0]}" if toolkit else "-gpu" if self.extras else ""
        return f"py{self.python}-{where}{gpu}"


def wheelhouse_target(features: FeatureSet) -> WheelhouseTarget:
    """The wheelhouse a host of this engine feature set installs from."""
    extras: tuple[str, ...] = ()
    if features.backend == "cuda":
        extras = (GPU_MONITORING, RUNTIME_TOOLKIT) if features.cuda == PYPI_CUDA else (GPU_MONITORING,)
    macos = features.libc.removeprefix("macos").split(".")[0] if features.os == "darwin" else ""
    return WheelhouseTarget(features.python, features.os, features.arch, macos, extras)


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


def _platforms(target: WheelhouseTarget) -> tuple[str, ...]:
    if target.os == "darwin":
        if target.arch != "arm64" or not target.macos.isdigit():
            raise WheelhouseError(f"no wheel platform known for macOS {target.macos or '?'} on {target.arch}")
        return (f"macosx_{target.macos}_0_arm64",)  # pip expands it to every older macOS release
    if target.arch not in _PLATFORMS:
        raise WheelhouseError(f"no wheel platform known for arch {target.arch!r}; supported: {', '.join(_PLATFORMS)}")
    return _PLATFORMS[target.arch]


def build_wheelhouse(python: str | WheelhouseTarget, arch: str = "", root: Path = DEFAULT_ROOT) -> Wheelhouse:
    """Wheels of rbee (from this checkout) and of its dependencies for a target (or a Linux ``python`` + ``arch``)."""
    target = python if isinstance(python, WheelhouseTarget) else WheelhouseTarget(python, "linux", arch)
    platforms = [arg for p in _platforms(target) for arg in ("--platform", p)]
    folder = root.expanduser() / target.name
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    stamp = folder / ".deps"
    wanted = [*_dependencies(), *target.extras]
    deps = "\n".join(sorted(wanted))
    if not stamp.exists() or stamp.read_text() != deps:
        _run([*pip, "download", "--only-binary=:all:", *platforms, "--python-version", target.python,
              "--implementation", "cp", "-d", str(folder), *wanted])  # fmt: skip
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
        rbee_wheel = folder / built.name
        shutil.copy(built, rbee_wheel)
    stamp.write_text(source)
    os.utime(folder)
    return Wheelhouse(folder, rbee_wheel)


ARCHIVE_MTIME = 315532800
"""The fixed time stamp of the archive's entries (the same wheels make the same archive)."""


def wheelhouse_archive(house: Wheelhouse, fingerprint: str) -> Path:
    """The wheelhouse as one uncompressed tar beside its folder (wheels are zip files already): one transfer.

    Named by the fingerprint, so an unchanged wheelhouse reuses it; archives of older fingerprints go.
    """
    target = house.folder.parent / f"{house.folder.name}-{fingerprint[:16]}.tar"
    if target.exists():
        return target
    partial = target.with_name(f".{target.name}.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for wheel in sorted(house.folder.glob("*.whl")):
            info = tar.gettarinfo(str(wheel), arcname=wheel.name)
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = ARCHIVE_MTIME, 0o644, 0, 0, "", ""
            with wheel.open("rb") as handle:
                tar.addfile(info, handle)
    partial.replace(target)
    for old in house.folder.parent.glob(f"{house.folder.name}-*.tar"):
        if old != target:
            old.unlink()
    return target
