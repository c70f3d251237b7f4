"""The host lock: the exact versions (and hashes) of the wheels a wheelhouse ships to hosts, inside the package.

``rbee/deploy/locks/<group>.txt`` are requirement files made by ``uv pip compile --universal
--python-version 3.11 --generate-hashes`` (every pin with its environment marker and the sha256 of each of
its files), one per group: ``runtime`` (rbee's dependencies and the engine's), ``gpu`` (nvidia-ml-py) and
``cuda`` (the CUDA runtime wheels of PyPI CUDA hosts). Each file names the inputs it was made from
(``# input:`` lines). A wheelhouse target takes the pins of its groups whose markers hold for its Python, OS
and arch; the wheelhouse downloads exactly those (``pip download --no-deps --require-hashes``), so a pinned
rbee pins its hosts, and deploying needs no uv.

``rbee wheelhouse lock`` makes the files again, on purpose (uv keeps the locked versions that still fit;
``--upgrade`` takes the newest); ``lock_problems()`` says where the lock and rbee's dependencies disagree
(a dependency added without re-locking), which stops a deploy before it downloads anything.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from rbee.deploy import rbee_wheel
from rbee.engine.cuda import RUNTIME_TOOLKIT
from rbee.engine.wheelcache import RUNTIME_REQUIREMENTS

LOCK_DIR = Path(__file__).resolve().parent / "locks"
REFRESH_COMMAND = "rbee wheelhouse lock"
GPU_MONITORING = "nvidia-ml-py>=12"
"""How a hive on a CUDA host reads its GPUs (NVML)."""
LOCK_PYTHON = "3.11"
"""The oldest Python the lock covers (``--universal``: every newer one too, markers split where needed)."""
INPUT_PREFIX = "# input: "


class LockError(Exception):
    """The lock cannot be read, does not match rbee's dependencies, or cannot be made; the message says which."""


@dataclass(frozen=True)
class LockGroup:
    """One lock file: its name and the requirements it is made from."""

    name: str
    inputs: tuple[str, ...]

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"


def lock_groups() -> tuple[LockGroup, ...]:
    """The groups: ``runtime`` (every host), ``gpu`` (CUDA hosts), ``cuda`` (CUDA hosts with PyPI's toolkit)."""
    return (
        LockGroup("runtime", (*rbee_wheel.requirements(), *RUNTIME_REQUIREMENTS)),
        LockGroup("gpu", (GPU_MONITORING,)),
        LockGroup("cuda", (RUNTIME_TOOLKIT,)),
    )


@dataclass(frozen=True)
class LockedPin:
    """One locked distribution: ``name==version``, the marker saying where it is needed, its files' hashes."""

    name: str
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def requirement_line(self) -> str:
        """The line pip downloads it from (no marker: already evaluated for the target)."""
        return " ".join([f"{self.name}=={self.version}", *(f"--hash={digest}" for digest in self.hashes)])


@dataclass(frozen=True)
class Lock:
    """A lock file read: the inputs it was made from and its pins."""

    inputs: tuple[str, ...]
    pins: tuple[LockedPin, ...]


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Requirement lines with their continuations joined, comments dropped, each with its first line number."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending, start = "", 0
    if pending:
        yield start, pending


def _pin(line: str, where: str) -> LockedPin:
    head, *hashes = line.split(" --hash=")
    try:
        requirement = Requirement(head.strip())
    except InvalidRequirement as exc:
        raise LockError(f"{where}: {exc}") from None
    specifiers = list(requirement.specifier)
    if len(specifiers) != 1 or specifiers[0].operator != "==" or requirement.extras or requirement.url:
        raise LockError(f"{where}: {head.strip()!r} is not one exact pin (name==version)")
    digests = tuple(digest.strip() for digest in hashes)
    if not digests or not all(d.startswith("sha256:") and len(d) == 71 for d in digests):
        raise LockError(f"{where}: {requirement.name} has no sha256 hashes (--generate-hashes)")
    return LockedPin(canonicalize_name(requirement.name), specifiers[0].version, requirement.marker, digests)


def parse_lock(text: str, name: str = "lock") -> Lock:
    """A lock file's text: ``# input:`` lines, then uv's pins (``name==version ; marker --hash=sha256:...``)."""
    inputs = tuple(
        line.removeprefix(INPUT_PREFIX).strip() for line in text.splitlines() if line.startswith(INPUT_PREFIX)
    )
    pins = tuple(_pin(line, f"{name}:{number}") for number, line in _logical_lines(text))
    return Lock(inputs, pins)


def read_lock(group: LockGroup) -> Lock:
    """The lock file of a group (a missing file is a ``LockError`` naming the refresh command)."""
    try:
        return parse_lock(group.path.read_text(), group.path.name)
    except FileNotFoundError:
        raise LockError(f"{group.path} is missing: make it with `{REFRESH_COMMAND}`") from None


def target_environment(python: str, os_name: str, arch: str) -> dict[str, str]:
    """The marker environment of a wheelhouse target (CPython ``3.11``, ``linux``/``darwin``, ``x86_64``...)."""
    darwin = os_name == "darwin"
    return {
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "implementation_version": f"{python}.0", "python_version": python, "python_full_version": f"{python}.0",
        "os_name": "posix", "sys_platform": "darwin" if darwin else "linux",
        "platform_system": "Darwin" if darwin else "Linux", "platform_machine": arch,
        "platform_release": "", "platform_version": "",
    }  # fmt: skip


def pins_for(lock: Lock, environment: dict[str, str]) -> list[LockedPin]:
    """The pins whose markers hold in ``environment``: one version per distribution."""
    chosen = [pin for pin in lock.pins if pin.marker is None or pin.marker.evaluate(environment)]
    seen: dict[str, str] = {}
    for pin in chosen:
        if seen.setdefault(pin.name, pin.version) != pin.version:
            raise LockError(f"the lock pins {pin.name} twice for one target ({seen[pin.name]}, {pin.version})")
    return chosen


def _normalized(requirements: Iterable[str]) -> list[str]:
    return sorted(str(Requirement(line)) for line in requirements)


def group_problems(group: LockGroup, lock: Lock) -> list[str]:
    """Where a group's lock disagrees with its inputs (what rbee needs now): inputs changed, a pin outside its range."""
    problems = []
    wanted, locked = _normalized(group.inputs), _normalized(lock.inputs)
    if wanted != locked:
        added = [line for line in wanted if line not in locked]
        gone = [line for line in locked if line not in wanted]
        changes = [f"not locked: {', '.join(added)}"] if added else []
        changes += [f"locked but no longer wanted: {', '.join(gone)}"] if gone else []
        problems.append(f"{group.path.name}: {'; '.join(changes)}")
    for line in group.inputs:
        requirement = Requirement(line)
        versions = [pin.version for pin in lock.pins if pin.name == canonicalize_name(requirement.name)]
        if not versions:
            problems.append(f"{group.path.name}: no pin for {requirement.name}")
        for version in versions:
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{group.path.name}: {requirement.name}=={version} is outside {line}")
    return problems


def lock_problems(groups: Iterable[LockGroup] | None = None) -> list[str]:
    """Every disagreement between the lock files and rbee's dependencies (empty: the lock is current)."""
    problems = []
    for group in lock_groups() if groups is None else groups:
        try:
            problems += group_problems(group, read_lock(group))
        except LockError as exc:
            problems.append(str(exc))
    return problems


def groups_for(extras: Iterable[str]) -> list[LockGroup]:
    """The groups a target installs from: ``runtime``, and the group of each extra (a ``LockError`` if unlocked)."""
    groups = lock_groups()
    chosen = [groups[0]]
    for extra in extras:
        found = next((group for group in groups[1:] if extra in group.inputs), None)
        if found is None:
            raise LockError(f"{extra} is in no lock group ({', '.join(group.name for group in groups[1:])})")
        chosen.append(found)
    return chosen


def locked_requirements(python: str, os_name: str, arch: str, extras: Iterable[str] = ()) -> list[LockedPin]:
    """What a target's wheelhouse holds: its groups' pins for its environment, after checking them against rbee."""
    groups = groups_for(extras)
    problems = lock_problems(groups)
    if problems:
        raise LockError(
            "the host lock does not match rbee's dependencies (" + "; ".join(problems) + f"): run `{REFRESH_COMMAND}` "
            "in rbee's checkout and commit rbee/deploy/locks/"
        )
    environment = target_environment(python, os_name, arch)
    return [pin for group in groups for pin in pins_for(read_lock(group), environment)]


def _header(group: LockGroup) -> str:
    return (
        f"# rbee's host lock, group {group.name}: the wheels a wheelhouse ships to hosts (rbee/deploy/host_lock.py).\n"
        f"# Made by `{REFRESH_COMMAND}` from these inputs; do not edit by hand.\n"
        + "".join(f"{INPUT_PREFIX}{line}\n" for line in _normalized(group.inputs))
    )


def uv_command(uv: str, source: str, output: str, upgrade: bool) -> list[str]:
    """``uv pip compile`` of one group: universal (every OS, arch and Python >= 3.11), with hashes."""
    return [uv, "pip", "compile", "--universal", "--python-version", LOCK_PYTHON, "--generate-hashes", "--quiet",
            "--no-header", *(["--upgrade"] if upgrade else []), source, "--output-file", output]  # fmt: skip


def refresh_lock(uv: str, upgrade: bool = False) -> list[Path]:
    """Make every group's lock file again with uv (the locked versions are kept where they still fit); the files.

    Only in a checkout: an installed rbee ships its lock as it was released.
    """
    if rbee_wheel.source_tree() is None:
        raise LockError(f"{LOCK_DIR} belongs to an installed rbee: refresh the lock in rbee's checkout")
    written = []
    for group in lock_groups():
        with tempfile.TemporaryDirectory(prefix="rbee-lock-") as tmp:
            source, output = Path(tmp) / f"{group.name}.in", Path(tmp) / f"{group.name}.txt"
            source.write_text("".join(f"{line}\n" for line in group.inputs))
            if group.path.exists():  # uv prefers the versions of an existing output file
                shutil.copy(group.path, output)
            done = subprocess.run(uv_command(uv, source.name, output.name, upgrade), cwd=tmp, capture_output=True,
                                  text=True, check=False)  # fmt: skip
            if done.returncode != 0:
                raise LockError(f"uv pip compile of {group.name} failed:\n{done.stderr.strip()[-2000:]}")
            text = _header(group) + output.read_text()
        parse_lock(text, group.path.name)  # what uv wrote is what the wheelhouse can read
        partial = group.path.with_name(f".{group.path.name}.partial")
        group.path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text)
        partial.replace(group.path)
        written.append(group.path)
    return written
