"""The host side of a streamed upload (``receive_upload``), run as the host runs it: ``python3 -c SOURCE``."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from rbee.deploy.host_state import parse_state, resumable_temp
from rbee.deploys.stream import Upload

DATA = os.urandom(3 * 2**20 + 12345)  # a few chunks and a partial one
SHA = hashlib.sha256(DATA).hexdigest()


def receive(
    tmp_path: Path, sent: bytes, offset: int = 0, sha: str = SHA, mode: str = "644", stamp: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run the receiver on ``tmp_path/model.gguf`` with ``sent`` on stdin, as ``Upload.remote_command`` words it."""
    src = tmp_path / "src.gguf"
    src.write_bytes(DATA)
    dest = str(tmp_path / "model.gguf")
    upload = Upload(str(src), resumable_temp(dest, sha), dest, sha, offset, mode, "", str(tmp_path / "stamp") * stamp)
    command = ["sh", "-c", upload.remote_command()]
    return subprocess.run(command, input=sent, capture_output=True, timeout=60, check=False)


def test_a_whole_copy_is_checked_renamed_into_place_and_stamped(tmp_path: Path) -> None:
    done = receive(tmp_path, DATA)
    assert done.returncode == 0, done.stderr
    model = tmp_path / "model.gguf"
    assert model.read_bytes() == DATA
    assert oct(model.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir() if ".rbee-tmp-" in p.name] == []
    state = parse_state(f"stamp upload-x {(tmp_path / 'stamp').read_text()}")  # as the state script prints it
    stamp = state.uploads[str(model)]
    assert stamp.sha256 == SHA
    st = model.stat()
    assert (stamp.size, stamp.mtime, stamp.inode) == (st.st_size, int(st.st_mtime), st.st_ino)


def test_an_interrupted_copy_is_continued_from_its_bytes(tmp_path: Path) -> None:
    half = len(DATA) // 2
    temp = Path(resumable_temp(str(tmp_path / "model.gguf"), SHA))
    temp.write_bytes(DATA[:half] + b"bytes past the offset are dropped")
    done = receive(tmp_path, DATA[half:], offset=half)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.gguf").read_bytes() == DATA


def test_a_cut_copy_keeps_its_bytes_for_the_next_deploy(tmp_path: Path) -> None:
    done = receive(tmp_path, DATA[:1000])
    assert done.returncode == 1
    said = done.stderr.decode()
    assert f"rbee: {tmp_path}/model.gguf: the copy was cut after 1000 of {len(DATA)} bytes" in said
    assert Path(resumable_temp(str(tmp_path / "model.gguf"), SHA)).read_bytes() == DATA[:1000]
    assert not (tmp_path / "model.gguf").exists()


def test_wrong_bytes_are_removed_and_named(tmp_path: Path) -> None:
    wrong = bytearray(DATA)
    wrong[-1] ^= 1
    done = receive(tmp_path, bytes(wrong))
    assert done.returncode == 1
    said = f"the copy's sha256 is {hashlib.sha256(wrong).hexdigest()}, not {SHA} (removed)"
    assert said in done.stderr.decode()
    assert [p.name for p in tmp_path.iterdir()] == ["src.gguf"]


def test_more_bytes_than_announced_fail(tmp_path: Path) -> None:
    done = receive(tmp_path, DATA + b"x" * (2 * 2**20))
    assert done.returncode == 1
    assert f"more than the {len(DATA)} bytes announced arrived" in done.stderr.decode()
    assert not (tmp_path / "model.gguf").exists()


def test_a_temp_shorter_than_the_offset_fails_asking_for_another_deploy(tmp_path: Path) -> None:
    temp = Path(resumable_temp(str(tmp_path / "model.gguf"), SHA))
    temp.write_bytes(DATA[:10])
    done = receive(tmp_path, DATA[100:], offset=100)
    assert done.returncode == 1
    assert f"{temp} holds 10 bytes, not the 100 this copy continues from; deploy again" in done.stderr.decode()


def test_a_second_copy_into_the_same_temp_file_is_refused(tmp_path: Path) -> None:
    temp = Path(resumable_temp(str(tmp_path / "model.gguf"), SHA))
    with temp.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = receive(tmp_path, DATA)
    assert done.returncode == 1
    assert f"another copy into {temp} is still running" in done.stderr.decode()


@pytest.mark.parametrize("owner", ["nobody-rbee-test:", ":nogroup-rbee-test"])
def test_an_unknown_owner_is_named(tmp_path: Path, owner: str) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(DATA)
    dest = str(tmp_path / "model.gguf")
    upload = Upload(str(src), resumable_temp(dest, SHA), dest, SHA, 0, "644", owner)
    done = subprocess.run(["sh", "-c", upload.remote_command()], input=DATA, capture_output=True, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().startswith(f"rbee: {dest}: LookupError: ")


def test_the_remote_command_runs_under_sudo_when_the_host_uses_it(tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(DATA)
    upload = Upload(str(src), "/m/.x.rbee-tmp-1", "/m/x", SHA)
    assert upload.remote_command(sudo=True).startswith("sudo -H -n -- python3 -c ")
    assert upload.remote_command(sudo=True, sudo_user="rbee").startswith("sudo -H -n -u rbee -- python3 -c ")
    assert upload.remote_command().endswith(f" /m/.x.rbee-tmp-1 /m/x {SHA} {len(DATA)} 0 '' '' ''")
