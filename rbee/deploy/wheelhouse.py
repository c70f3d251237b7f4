"""The wheels a host needs to install rbee without reaching PyPI itself (hosts may be air-gapped).

Built on the control machine, once per target (Python version, OS, CPU arch, and the extras of its
engine: nvidia-ml-py and the CUDA runtime libraries on CUDA hosts), into
``~/.cache/rbee/wheelhouse/<target>/``; the deploy ships that folder to each host as one archive and installs
with ``pip --no-index --find-links``. It holds rbee's own wheel (``rbee.deploy.rbee_wheel``: the code this
control machine runs, from a checkout or an installed rbee) and exactly the dependency versions of the host
lock (``rbee.deploy.host_lock``), downloaded again only when the lock changes. Its identity
(``planned_fingerprint``: the pins and rbee's code) is known without preparing it, so a plan downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from rbee.deploy import rbee_wheel
from rbee.deploy.host_lock import GPU_MONITORING, LockedPin, LockError, locked_requirements
from rbee.deploy.probe import MIN_GLIBC
from rbee.deploy.rbee_wheel import RbeeWheelError
from rbee.engine.cuda import PYPI_CUDA, RUNTIME_TOOLKIT
from rbee.engine.features import FeatureSet

DEFAULT_ROOT = Path("~/.cache/rbee/wheelhouse")
_PLATFORMS = {
    arch: (f"manylinux2014_{arch}", *(f"manylinux_2_{minor}_{arch}" for minor in range(17, MIN_GLIBC[1] + 1)))
    for arch in ("x86_64", "aarch64")
}
"""pip's ``--platform`` values of a Linux arch: every manylinux up to the hosts' oldest glibc (pip does not expand
``manylinux_2_28`` to older ones itself: a ``manylinux_2_27`` wheel, such as nvidia-cublas', needs its own)."""


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


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise WheelhouseError(f"{' '.join(command[:5])} ... failed:\n{tail}")


def _platforms(target: WheelhouseTarget) -> tuple[str, ...]:
    if target.os == "darwin":
        if target.arch != "arm64" or not target.macos.isdigit():
            raise WheelhouseError(f"no wheel platform known for macOS {target.macos or '?'} on {target.arch}")
        return (f"macosx_{target.macos}_0_arm64",)  # pip expands it to every older macOS release
    if target.arch not in _PLATFORMS:
        raise WheelhouseError(f"no wheel platform known for arch {target.arch!r}; supported: {', '.join(_PLATFORMS)}")
    return _PLATFORMS[target.arch]


LOCK_STAMP = ".lock"
"""The target's locked requirements the folder's dependencies were downloaded for."""
SOURCE_STAMP = ".rbee-source"
"""The fingerprint of the rbee code its rbee wheel was built from."""


def _pins(target: WheelhouseTarget) -> tuple[list[LockedPin], str]:
    """The target's locked pins (their markers evaluated for it) and their text, as the folder's stamp holds it."""
    try:
        pins = locked_requirements(target.python, target.os, target.arch, target.extras)
    except LockError as exc:
        raise WheelhouseError(str(exc)) from None
    return pins, "".join(f"{pin.requirement_line()}\n" for pin in pins)


def planned_fingerprint(target: WheelhouseTarget) -> str:
    """The identity of a target's wheelhouse, known without preparing it: sha256 over the target, its locked pins
    (each with the hashes pip must match) and the fingerprint of the rbee code its rbee wheel is built from.

    What a host's runtime stamp and a release record hold: the same on every control machine, an empty cache
    included, so a plan needs no download to tell whether a host's wheelhouse is this one.
    """
    digest = hashlib.sha256(f"{target.name}\0".encode())
    digest.update(_pins(target)[1].encode())
    digest.update(rbee_wheel.fingerprint().encode())
    return digest.hexdigest()


def wheelhouse_ready(target: WheelhouseTarget, root: Path = DEFAULT_ROOT) -> bool:
    """True when the target's wheelhouse is prepared already (its pins downloaded, rbee's wheel built from the code
    running here): ``build_wheelhouse`` would download and build nothing."""
    folder = root.expanduser() / target.name
    try:
        ready = (folder / LOCK_STAMP).read_text() == _pins(target)[1]
        ready = ready and (folder / SOURCE_STAMP).read_text() == rbee_wheel.fingerprint()
    except OSError:
        return False
    return ready and any(folder.glob(f"{rbee_wheel.DISTRIBUTION}-*.whl"))


def _sync_dependencies(folder: Path, target: WheelhouseTarget, platforms: Sequence[str]) -> None:
    """The folder's dependencies made exactly the target's locked pins: downloaded when the lock changed, else kept.

    ``pip download --no-deps --require-hashes`` of the pins (their markers evaluated here, for the target);
    wheels of other versions (an older lock's) are removed.
    """
    pins, text = _pins(target)
    stamp = folder / LOCK_STAMP
    if stamp.exists() and stamp.read_text() == text:
        return
    requirements = folder / ".requirements.txt"
    requirements.write_text(text)
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "download", "--no-deps",
          "--only-binary=:all:", "--require-hashes", *[arg for p in platforms for arg in ("--platform", p)],
          "--python-version", target.python, "--implementation", "cp", "-d", str(folder),
          "-r", str(requirements)])  # fmt: skip
    _remove_unlocked(folder, pins)
    (folder / ".deps").unlink(missing_ok=True)  # the stamp of wheelhouses before the lock
    stamp.write_text(text)


def _remove_unlocked(folder: Path, pins: Sequence[LockedPin]) -> None:
    """Remove the dependency wheels of the folder that are not one of ``pins`` (rbee's own wheel stays)."""
    wanted = {(pin.name, Version(pin.version)) for pin in pins}
    for wheel in folder.glob("*.whl"):
        try:
            name, version, _build, _tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            wheel.unlink()
            continue
        if name != canonicalize_name(rbee_wheel.DISTRIBUTION) and (name, version) not in wanted:
            wheel.unlink()


def _sync_rbee_wheel(folder: Path) -> Path:
    """The folder's rbee wheel: built again when the rbee code this machine runs changed since the last one."""
    try:
        source = rbee_wheel.fingerprint()
        stamp = folder / SOURCE_STAMP
        current = sorted(folder.glob(f"{rbee_wheel.DISTRIBUTION}-*.whl"))
        if current and stamp.exists() and stamp.read_text() == source:
            return current[-1]
        with tempfile.TemporaryDirectory(prefix="rbee-wheel-", dir=folder.parent) as tmp:
            built = rbee_wheel.build(Path(tmp))
            for old in current:
                old.unlink()
            made = folder / built.name
            built.replace(made)
    except RbeeWheelError as exc:
        raise WheelhouseError(str(exc)) from None
    stamp.write_text(source)
    os.utime(folder)
    return made


def build_wheelhouse(python: str | WheelhouseTarget, arch: str = "", root: Path = DEFAULT_ROOT) -> Wheelhouse:
    """Wheels of rbee (the code running here) and its locked dependencies for a target (or Linux ``python``+arch)."""
    target = python if isinstance(python, WheelhouseTarget) else WheelhouseTarget(python, "linux", arch)
    platforms = _platforms(target)
    folder = root.expanduser() / target.name
    folder.mkdir(parents=True, exist_ok=True)
    _sync_dependencies(folder, target, platforms)
    return Wheelhouse(folder, _sync_rbee_wheel(folder))


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
