"""The wheel of the rbee that runs here, which the deploy ships to the hosts: the same code, wherever it runs from.

From a checkout (``pyproject.toml`` next to the ``rbee`` package) the wheel is built from the source tree
with pip; from an installed rbee (``pip install rbee``: no source tree) it is put together again from the
installed files its wheel's ``RECORD`` lists, the dist-info included (name, version, dependencies, entry points),
so a host gets exactly the rbee code the control machine runs. ``fingerprint()`` changes when any of those
files changes; ``requirements()`` are rbee's run-time dependencies (no extras), which the host lock must cover.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import rbee

DISTRIBUTION = "rbee"
PACKAGES = ("rbee", "rbee_runtime")
"""The import packages of rbee: what its wheel for the hosts holds."""
DIST_FOLDERS = (*PACKAGES, "ansible_collections")
"""What the released wheel holds: the packages and the Ansible collection ``rbee.cluster`` (for ansible-core)."""
SOURCE_FILES = ("pyproject.toml", "README.md")
"""What a source build needs besides the packages (README.md: the long description, not in the fingerprint)."""
INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json"})
"""Files an installer writes into the dist-info, which a wheel does not have (RECORD is written anew)."""
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
"""The time stamp of every entry of a wheel rebuilt from installed files (the same files make the same wheel)."""
SOURCE_DATE_EPOCH = "315532800"
"""The same time, for a source build (setuptools' zip entries)."""


class RbeeWheelError(Exception):
    """rbee's own wheel cannot be made here; the message says why."""


def source_tree() -> Path | None:
    """The checkout rbee runs from (the folder holding ``pyproject.toml`` and the packages), or None when installed."""
    root = Path(rbee.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and all((root / package / "__init__.py").is_file() for package in PACKAGES):
        return root
    return None


def _extra_only(requirement: str) -> bool:
    """Whether a ``Requires-Dist`` line belongs to an extra (its marker names ``extra``)."""
    marker = Requirement(requirement).marker
    return marker is not None and re.search(r"\bextra\b", str(marker)) is not None


def requirements() -> list[str]:
    """rbee's run-time dependencies, extras left out: the checkout's ``pyproject.toml``, else the installed metadata."""
    tree = source_tree()
    if tree is not None:
        data = tomllib.loads((tree / "pyproject.toml").read_text())
        return list(data["project"]["dependencies"])
    return [line for line in importlib.metadata.requires(DISTRIBUTION) or [] if not _extra_only(line)]


def _installed() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise RbeeWheelError("rbee is neither a checkout nor an installed distribution here") from None


def _installed_files(dist: importlib.metadata.Distribution) -> list[importlib.metadata.PackagePath]:
    """The installed files a host's wheel holds: the packages and the dist-info (no bytecode, scripts, collection)."""
    kept = []
    for file in dist.files or []:
        top = file.parts[0]
        if top not in PACKAGES and not top.endswith(".dist-info"):
            continue  # scripts (bin/rbee) are made again by the host's pip; hosts run no Ansible collection
        if "__pycache__" in file.parts or file.suffix == ".pyc" or file.name in INSTALLER_FILES:
            continue  # bytecode is made by the host's Python; installer files are the installer's
        kept.append(file)
    if not any(file.parts[0] == "rbee" and file.name == "__init__.py" for file in kept):
        raise RbeeWheelError(
            f"the installed {DISTRIBUTION} lists no package files (an editable install without its checkout?): "
            "install rbee from a wheel (pip install rbee) or run it from a checkout"
        )
    return sorted(kept, key=lambda file: (file.parts[0].endswith(".dist-info"), file.as_posix()))


def _source_files(tree: Path, readme: bool = True, folders: Sequence[str] = PACKAGES) -> Iterator[Path]:
    for name in SOURCE_FILES if readme else SOURCE_FILES[:1]:
        yield tree / name
    for folder in folders:
        for path in sorted((tree / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def fingerprint() -> str:
    """sha256 over the names and contents of everything that goes into rbee's wheel."""
    digest = hashlib.sha256()
    tree = source_tree()
    if tree is not None:
        items = ((path.relative_to(tree).as_posix(), path) for path in _source_files(tree, readme=False))
    else:
        dist = _installed()
        items = ((file.as_posix(), Path(str(dist.locate_file(file)))) for file in _installed_files(dist))
    for name, path in items:
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_from_source(tree: Path, out_dir: Path, folders: Sequence[str] = PACKAGES) -> Path:
    """Build the wheel of a source tree (``pyproject.toml`` + ``folders``) with pip into ``out_dir``; its path.

    The tree is copied first, so the build leaves nothing in it (no ``build/``, no egg-info). The hosts' wheel
    has the packages only; ``DIST_FOLDERS`` make the wheel rbee is released as (with the Ansible collection).
    """
    with tempfile.TemporaryDirectory(prefix="rbee-wheel-") as tmp:
        copy = Path(tmp) / "src"
        for path in _source_files(tree, folders=folders):
            target = copy / path.relative_to(tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        built_dir = Path(tmp) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}  # reproducible zip time stamps
        command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps",
                   "-w", str(built_dir), str(copy)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
            raise RbeeWheelError(f"building rbee's wheel from {tree} failed:\n{tail}")
        built = next(built_dir.glob(f"{DISTRIBUTION}-*.whl"))
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(built, out_dir / built.name))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_name(dist: importlib.metadata.Distribution, info_dir: str) -> str:
    """``rbee-0.1.0-py3-none-any.whl``: the name, version and tags (from the dist-info's ``WHEEL``)."""
    wheel_file = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise RbeeWheelError(f"{info_dir}/WHEEL names no tag")
    parts = [tag.split("-") for tag in tags]
    compressed = "-".join(".".join(dict.fromkeys(part[i] for part in parts)) for i in range(3))
    name = re.sub(r"[-_.]+", "_", canonicalize_name(dist.metadata["Name"]))
    return f"{name}-{dist.version}-{compressed}.whl"


def build_from_installed(out_dir: Path) -> Path:
    """rbee's wheel put together again from the installed files (those its ``RECORD`` lists); its path.

    Entries in a fixed order with a fixed time stamp and mode, and a new ``RECORD``: the same installed
    files always make the same bytes.
    """
    dist = _installed()
    files = _installed_files(dist)
    info_dir = next(file.parts[0] for file in files if file.parts[0].endswith(".dist-info"))
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / _wheel_name(dist, info_dir)
    partial = wheel.with_name(f".{wheel.name}.partial")
    record: list[str] = []
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in [*files, None]:
            if file is None:  # RECORD last: every other entry's hash and size, its own line empty
                name, data = f"{info_dir}/RECORD", "".join(f"{line}\n" for line in [*record, f"{info_dir}/RECORD,,"])
                payload = data.encode()
            else:
                name, payload = file.as_posix(), Path(str(dist.locate_file(file))).read_bytes()
                record.append(f"{name},{_record_hash(payload)},{len(payload)}")
            entry = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, payload)
    partial.replace(wheel)
    return wheel


def build(out_dir: Path) -> Path:
    """rbee's wheel as this machine runs it, in ``out_dir``: from the checkout, else from the installed files."""
    tree = source_tree()
    return build_from_source(tree, out_dir) if tree is not None else build_from_installed(out_dir)
