"""A verified upload through pyinfra's own transfer (``@local``: no ssh stream), checked by python3's hashlib."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from rbee.deploy.host_state import parse_state

ROOT = Path(__file__).parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
DATA = os.urandom(2 * 2**20 + 7)


def upload(tmp_path: Path, sha: str) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "src.gguf"
    src.write_bytes(DATA)
    env = {
        **os.environ, "RBEE_TEST_SRC": str(src), "RBEE_TEST_DEST": str(tmp_path / "m.gguf"),
        "RBEE_TEST_SHA256": sha, "RBEE_TEST_STAMP": str(tmp_path / "stamp"),
    }  # fmt: skip
    return subprocess.run(
        [PYINFRA, "-y", "@local", "tests/deploy/verified_upload_deploy.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_checked_copy_is_renamed_into_place_and_stamped(tmp_path: Path) -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    done = upload(tmp_path, sha)
    assert done.returncode == 0, done.stderr[-3000:]
    model = tmp_path / "m.gguf"
    assert model.read_bytes() == DATA and oct(model.stat().st_mode & 0o777) == "0o640"
    stamp = parse_state(f"stamp upload-x {(tmp_path / 'stamp').read_text()}").uploads[str(model)]
    assert stamp.sha256 == sha and stamp.inode == model.stat().st_ino
    assert [p.name for p in tmp_path.iterdir() if ".rbee-tmp-" in p.name] == []


def test_a_copy_with_another_sum_is_removed_and_named(tmp_path: Path) -> None:
    wrong = "0" * 64
    done = upload(tmp_path, wrong)
    assert done.returncode != 0
    assert f"rbee: {tmp_path}/m.gguf: the uploaded copy's sha256 is not {wrong}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.gguf"]
