"""Engine wheels that say what they need: tagged for their feature set, slimmed, and checked against a host.

A llama-cpp-python build comes out as ``py3-none-linux_x86_64`` (pip on any Linux host would take it)
and stores each shared library up to six times (wheels cannot hold symlinks). ``finish_wheel``
rewrites it once, on the control machine: tags ``cp311-none-manylinux_2_36_x86_64`` (the Python
and libc of its feature set), one copy of each library under the name the loader opens, nothing
outside the ``llama_cpp`` package. ``wheel_problem`` then refuses, before any upload, a wheel whose
tags a host's Python would not accept (``packaging.tags``), naming both.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import parse_wheel_filename
from wheel.wheelfile import WheelFile  # type: ignore[import-untyped]

from rbee.engine.features import FeatureSet

# Libraries Python opens by their unversioned name (llama_cpp/_ggml.py, llama_cpp.py, mtmd_cpp.py).
_OPENED_BY_NAME = ("libggml.so", "libllama.so", "libmtmd.so", "libggml.dylib", "libllama.dylib", "libmtmd.dylib")
_VERSIONED = re.compile(r"^(?P<stem>lib[\w.+-]+?)\.so(?P<suffix>(\.\d+)+)$")


def host_platforms(features: FeatureSet) -> list[str]:
    """The platform tags pip accepts on a host described by ``features`` (most specific first)."""
    if features.os == "darwin":
        release = features.libc.removeprefix("macos").split(".")[0]
        return list(mac_platforms((int(release) if release.isdigit() else 11, 0), features.arch))
    arch = features.arch
    platforms = []
    if features.libc.startswith("glibc"):
        glibc_major, _, minor = features.libc.removeprefix("glibc").partition(".")
        if glibc_major == "2" and minor.isdigit():
            platforms += [f"manylinux_2_{m}_{arch}" for m in range(int(minor), 4, -1)]
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            platforms += [f"{name}_{arch}" for m, name in legacy.items() if m <= int(minor)]
    return [*platforms, f"linux_{arch}"]


def host_tags(features: FeatureSet) -> set[Tag]:
    """Every wheel tag a host's pip accepts (its CPython, abi3 and pure tags on its platforms)."""
    major, _, minor = features.python.partition(".")
    version = (int(major), int(minor))
    platforms = host_platforms(features)
    interpreter = features.python_tag
    return {*cpython_tags(version, platforms=platforms), *compatible_tags(version, interpreter, platforms)}


def wheel_problem(wheel_name: str, host: str, features: FeatureSet) -> str | None:
    """Why ``host`` (described by ``features``) cannot install the wheel, naming both; ``None`` if it can."""
    _, _, _, tags = parse_wheel_filename(wheel_name)
    if tags & host_tags(features):
        return None
    wheel_tags = ", ".join(sorted(str(t) for t in tags))
    return (
        f"engine wheel {wheel_name} (tags {wheel_tags}) does not fit {host}: its Python {features.python} on "
        f"{features.os}/{features.arch} with {features.libc or 'an unknown libc'} accepts "
        f"{features.python_tag}-none-{host_platforms(features)[0]} and older platforms"
    )


def _keep(name: str, names: set[str]) -> bool:
    """Keep ``llama_cpp/`` only, and each library once: ``libX.so.0`` (what NEEDED names), or ``libX.so``
    when Python opens it by that name; ``libX.so.0.25.3`` and the copies outside the package go."""
    if not name.startswith("llama_cpp/") and ".dist-info/" not in name:
        return False
    base = name.rsplit("/", 1)[-1]
    if base in _OPENED_BY_NAME:
        return True
    match = _VERSIONED.match(base)
    if match:  # keep the shortest versioned name (the SONAME, libX.so.0); drop libX.so.0.25.3
        folder = name.rsplit("/", 1)[0]
        shorter = [s for s in names if s.startswith(f"{folder}/{match['stem']}.so.") and len(s) < len(name)]
        return not shorter
    # libggml-base.so goes: the linker wants libggml-base.so.0, Python never opens it
    return not (base.endswith(".so") and any(n.startswith(f"{name}.") for n in names))


def finish_wheel(raw: Path, features: FeatureSet, out_dir: Path) -> Path:
    """Write the slimmed wheel of ``raw`` tagged for ``features`` into ``out_dir``; returns its path."""
    name, version, _, _ = parse_wheel_filename(raw.name)
    tag = f"{features.python_tag}-none-{features.platform_tag}"
    target = out_dir / f"{str(name).replace('-', '_')}-{version}-{tag}.whl"
    with zipfile.ZipFile(raw) as source:
        names = {i.filename for i in source.infolist() if not i.is_dir()}
        with WheelFile(target, "w") as sink:
            for info in source.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if info.is_dir() or base == "RECORD" or not _keep(info.filename, names):
                    continue
                data = source.read(info)
                if info.filename.endswith(".dist-info/WHEEL"):
                    data = _retag(data.decode(), tag).encode()
                sink.writestr(info, data)
    return target


def _retag(wheel_metadata: str, tag: str) -> str:
    lines = [line for line in wheel_metadata.splitlines() if not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    return "\n".join([*lines, "Root-Is-Purelib: false", f"Tag: {tag}"]) + "\n"
