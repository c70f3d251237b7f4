"""The host lock (``rbee/deploy/locks/``): it matches rbee's dependencies, and each target gets its pins."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rbee.deploy import host_lock, rbee_wheel
from rbee.deploy.host_lock import (
    GPU_MONITORING,
    LockError,
    group_problems,
    groups_for,
    lock_groups,
    lock_problems,
    locked_requirements,
    parse_lock,
    pins_for,
    read_lock,
    target_environment,
)
from rbee.deploy.rbee_wheel import requirements
from rbee.deploy.wheelhouse import WheelhouseError, WheelhouseTarget, build_wheelhouse
from rbee.engine.cuda import RUNTIME_TOOLKIT
from rbee.engine.wheelcache import RUNTIME_REQUIREMENTS

HASH = "sha256:" + "a" * 64
LOCK = f"""# input: numpy>=1.26
# input: uvloop>=0.19; sys_platform != 'win32'
numpy==2.4.6 ; python_full_version < '3.12' \\
    --hash={HASH}
    # via -r runtime.in
numpy==2.5.5 ; python_full_version >= '3.12' \\
    --hash={HASH} \\
    --hash=sha256:{"b" * 64}
colorama==0.4.6 ; sys_platform == 'win32' \\
    --hash={HASH}
uvloop==0.23.0 ; sys_platform != 'win32' --hash={HASH}
"""


def test_the_committed_lock_matches_pyproject() -> None:
    """A dependency added to (or removed from) pyproject.toml without re-locking fails here, naming the command."""
    problems = lock_problems()
    assert problems == [], f"the host lock is out of date ({'; '.join(problems)}): run `rbee wheelhouse lock`"
    runtime = lock_groups()[0]
    assert set(runtime.inputs) == {*requirements(), *RUNTIME_REQUIREMENTS}


def test_every_target_gets_one_version_of_each_locked_distribution() -> None:
    targets = [(python, "linux", arch) for python in ("3.11", "3.12", "3.13") for arch in ("x86_64", "aarch64")]
    for python, os_name, arch in [*targets, ("3.12", "darwin", "arm64")]:
        extras = (GPU_MONITORING, RUNTIME_TOOLKIT) if os_name == "linux" else ()
        pins = locked_requirements(python, os_name, arch, extras)
        names = [pin.name for pin in pins]
        assert len(names) == len(set(names))
        assert {"pydantic", "numpy", "diskcache", "uvloop"} <= set(names)
        assert "colorama" not in names  # Windows only
        assert ("nvidia-cublas" in names) == (os_name == "linux")


def test_markers_are_evaluated_for_the_target_not_for_this_machine() -> None:
    lock = parse_lock(LOCK)
    assert lock.inputs == ("numpy>=1.26", "uvloop>=0.19; sys_platform != 'win32'")
    old = {pin.name: pin.version for pin in pins_for(lock, target_environment("3.11", "linux", "aarch64"))}
    new = {pin.name: pin.version for pin in pins_for(lock, target_environment("3.13", "darwin", "arm64"))}
    assert old == {"numpy": "2.4.6", "uvloop": "0.23.0"}
    assert new == {"numpy": "2.5.5", "uvloop": "0.23.0"}
    line = next(pin for pin in lock.pins if pin.version == "2.5.5").requirement_line()
    assert line == f"numpy==2.5.5 --hash={HASH} --hash=sha256:{'b' * 64}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("numpy>=2 --hash=" + HASH, "'numpy>=2' is not one exact pin"),
        ("numpy==2.4.6", "numpy has no sha256 hashes"),
        ("numpy==2.4.6 --hash=md5:abc", "numpy has no sha256 hashes"),
        ("numpy[x]==2.4.6 --hash=" + HASH, "is not one exact pin"),
        ("num py==1 --hash=" + HASH, "runtime.txt:1: "),
    ],
)
def test_a_lock_line_that_is_not_an_exact_hashed_pin_is_refused(text: str, message: str) -> None:
    with pytest.raises(LockError, match=r"^runtime\.txt:1: ") as raised:
        parse_lock(text + "\n", "runtime.txt")
    assert message in str(raised.value)


def test_two_versions_of_one_distribution_for_one_target_are_refused() -> None:
    lock = parse_lock(f"a==1 --hash={HASH}\na==2 ; python_version >= '3.11' --hash={HASH}\n")
    with pytest.raises(LockError, match="pins a twice for one target"):
        pins_for(lock, target_environment("3.11", "linux", "x86_64"))


def test_a_dependency_added_without_relocking_is_named() -> None:
    runtime = lock_groups()[0]
    added = dataclasses.replace(runtime, inputs=(*runtime.inputs, "tomlkit>=0.12"))
    assert group_problems(added, read_lock(runtime)) == [
        "runtime.txt: not locked: tomlkit>=0.12", "runtime.txt: no pin for tomlkit",
    ]  # fmt: skip
    raised = dataclasses.replace(runtime, inputs=tuple(
        "pydantic>=99" if line.startswith("pydantic") else line for line in runtime.inputs
    ))  # fmt: skip
    problems = group_problems(raised, read_lock(runtime))
    assert problems[0].startswith("runtime.txt: not locked: pydantic>=99; locked but no longer wanted: pydantic>=")
    assert problems[1].startswith("runtime.txt: pydantic==") and problems[1].endswith(" is outside pydantic>=99")


def test_a_stale_lock_stops_the_wheelhouse_before_any_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dependency in rbee's metadata that the lock lacks: the deploy stops at once, saying how to re-lock."""
    monkeypatch.setattr(rbee_wheel, "requirements", lambda: [*requirements(), "tomlkit>=0.12"])
    with pytest.raises(WheelhouseError) as raised:
        build_wheelhouse(WheelhouseTarget("3.11", "linux", "x86_64"), root=tmp_path)
    message = str(raised.value)
    assert message.startswith("the host lock does not match rbee's dependencies (runtime.txt: not locked: tomlkit")
    assert message.endswith("run `rbee wheelhouse lock` in rbee's checkout and commit rbee/deploy/locks/")
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]  # nothing downloaded, no stamp


def test_a_missing_lock_file_names_the_refresh_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(host_lock, "LOCK_DIR", tmp_path)
    missing = f"{tmp_path / 'gpu.txt'} is missing: make it with `rbee wheelhouse lock`"
    assert lock_problems(lock_groups()[1:2]) == [missing]


def test_an_extra_outside_the_lock_is_refused() -> None:
    assert [group.name for group in groups_for([GPU_MONITORING, RUNTIME_TOOLKIT])] == ["runtime", "gpu", "cuda"]
    with pytest.raises(LockError, match="cupy>=13 is in no lock group"):
        groups_for(["cupy>=13"])
