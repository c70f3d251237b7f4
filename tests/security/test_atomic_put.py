"""``rbee.deploys.atomic.atomic_put`` for real (pyinfra's ``@local`` connector, real files); how a rollback puts
kept model bytes back is in ``tests/deploy/test_release_history.py``.

A process that has the old file mmapped is the worker of the issue: after ``files.put`` rewrote the file in
place it dies of SIGBUS reading its mapping; after ``atomic_put`` it still reads the old bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
OLD = os.urandom(64 * 1024)  # 16 pages
NEW = b"GGUF new model bytes\n" * 100  # one page: a mapping of the old size reaches past its end

MAPPER = """
import hashlib, mmap, sys
with open(sys.argv[1], "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
print("mapped", flush=True)
sys.stdin.readline()
print(hashlib.sha256(mapped[:]).hexdigest(), flush=True)
"""


def put(src: Path, dest: Path, mode: str = "644", op: str = "atomic") -> dict[str, Any]:
    """One pyinfra run on ``@local`` that uploads ``src`` to ``dest``; its results (``--json``)."""
    env = {**os.environ, "RBEE_TEST_SRC": str(src), "RBEE_TEST_DEST": str(dest), "RBEE_TEST_MODE": mode}
    env["RBEE_TEST_OP"] = op
    run = subprocess.run(
        [PYINFRA, "-y", "--json", "@local", "tests/security/atomic_deploy.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    totals: dict[str, Any] = json.loads(run.stdout)["results"]["totals"]
    return totals


@pytest.fixture
def mapped(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """``dest`` holding OLD, mmapped by a child process that reads the whole mapping when told to."""
    dest = tmp_path / "model.gguf"
    dest.write_bytes(OLD)
    child = subprocess.Popen(
        [sys.executable, "-c", MAPPER, str(dest)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "mapped\n"
        yield dest, child
    finally:
        child.kill()
        child.wait(timeout=10)


def read_mapping(child: subprocess.Popen[str]) -> tuple[int, str]:
    """Tell the child to read its whole mapping: (its exit status, the sha256 it read)."""
    out, _ = child.communicate("go\n", timeout=30)
    return child.returncode, out.strip()


def test_a_changed_file_is_a_new_inode_and_a_mapping_keeps_the_old_bytes(
    mapped: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    dest, child = mapped
    src = tmp_path / "new.gguf"
    src.write_bytes(NEW)
    before = dest.stat().st_ino
    assert put(src, dest, mode="640")["success"] == 1
    assert dest.read_bytes() == NEW
    assert dest.stat().st_ino != before
    assert oct(dest.stat().st_mode & 0o777) == "0o640"
    assert read_mapping(child) == (0, hashlib.sha256(OLD).hexdigest())
    assert [p.name for p in tmp_path.iterdir() if ".rbee-tmp-" in p.name] == []


def test_files_put_rewrites_in_place_and_the_mapping_dies_of_sigbus(
    mapped: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    """The failure atomic_put prevents, shown with pyinfra's own upload (proves the check above can fail)."""
    dest, child = mapped
    src = tmp_path / "new.gguf"
    src.write_bytes(NEW)
    before = dest.stat().st_ino
    put(src, dest, op="files.put")
    assert dest.stat().st_ino == before
    assert read_mapping(child)[0] == -signal.SIGBUS


def test_an_unchanged_file_is_not_sent_again(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_bytes(NEW)
    put(src, dest)
    inode = dest.stat().st_ino
    assert put(src, dest) == {"hosts": 1, "success": 0, "error": 0, "no_change": 1}
    assert dest.stat().st_ino == inode


def test_only_a_changed_mode_is_set_in_place(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_bytes(NEW)
    put(src, dest, mode="644")
    inode = dest.stat().st_ino
    assert put(src, dest, mode="600")["success"] == 1
    assert dest.stat().st_ino == inode and oct(dest.stat().st_mode & 0o777) == "0o600"


def test_leftovers_of_an_interrupted_upload_are_removed_and_nothing_else(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_bytes(NEW)
    put(src, dest)
    leftover, other = tmp_path / ".dest.rbee-tmp-0badf00d", tmp_path / ".other.rbee-tmp-0badf00d"
    leftover.write_bytes(NEW[:100])
    other.write_bytes(b"another file's upload")
    assert put(src, dest)["success"] == 1
    assert not leftover.exists() and other.exists()
    assert put(src, dest)["success"] == 0


def test_a_folder_in_the_way_fails_the_host_naming_it(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_bytes(NEW)
    dest.mkdir()
    env = {**os.environ, "RBEE_TEST_SRC": str(src), "RBEE_TEST_DEST": str(dest)}
    run = subprocess.run(
        [PYINFRA, "-y", "@local", "tests/security/atomic_deploy.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert f"{dest} exists and is not a file" in run.stderr
