"""The host side of a streamed upload (``stream.py``): run there as ``python3 -c SOURCE ARGS``, the bytes on stdin.

Appends stdin to the content-named temp file after the bytes an interrupted copy left there (those are read and
hashed first), hashing as it writes, so the check reads nothing twice; then fsync, owner and mode, rename over the
target, fsync of the folder, and the upload stamp (``rbee.deploy.host_state``: ``<dest> <sha256> <size> <mtime>
<inode>``). A stream cut short keeps its bytes for the next deploy; a wrong sum removes them. Errors: one
``rbee: <dest>: ...`` line on stderr, exit 1. Standard library only (the host has no rbee yet); Linux and macOS.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path

CHUNK = 1 << 20


class FailedError(Exception):
    """What went wrong, said on stderr as ``rbee: <dest>: <why>``."""


def _hash_prefix(fd: int, offset: int, digest: hashlib._Hash) -> None:
    """Hash the first ``offset`` bytes of ``fd`` (an interrupted copy's), leaving the position at ``offset``."""
    os.lseek(fd, 0, os.SEEK_SET)
    left = offset
    while left:
        block = os.read(fd, min(CHUNK, left))
        if not block:
            raise FailedError(f"the interrupted copy ends before byte {offset}")
        digest.update(block)
        left -= len(block)


def _write_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int, digest: hashlib._Hash, offset: int, size: int) -> int:
    """Append stdin to ``fd`` while hashing it, then fsync it; the bytes the file then holds.

    One fsync at the end: flushing while the bytes come (a thread's ``fdatasync`` every 64 MiB) made 4 hosts'
    copies on one disk 15-35% slower on the test machine.
    """
    held = offset
    while True:
        block = os.read(0, CHUNK)
        if not block:
            break
        digest.update(block)
        _write_all(fd, block)
        held += len(block)
        if held > size:
            raise FailedError(f"more than the {size} bytes announced arrived")
    os.fsync(fd)
    return held


def _finish(temp: str, dest: str, sha256: str, mode: str, owner: str, stamp: str) -> None:
    """Owner and mode, rename over ``dest``, fsync of the folder, then the stamp (when asked)."""
    if owner:
        user, _, group = owner.partition(":")
        if user and group:
            shutil.chown(temp, user, group)
        elif user:
            shutil.chown(temp, user)
        else:
            shutil.chown(temp, group=group)
    if mode:
        Path(temp).chmod(int(mode, 8))
    target = Path(temp).rename(dest)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    if stamp:
        st = target.stat()
        Path(stamp).write_text(f"{dest} {sha256} {st.st_size} {int(st.st_mtime)} {st.st_ino}\n")


def receive(temp: str, dest: str, sha256: str, size: int, offset: int, mode: str, owner: str, stamp: str) -> None:
    """Continue ``temp`` from byte ``offset`` with stdin; when it then is ``size`` bytes of ``sha256``, put it at
    ``dest``."""
    fd = os.open(temp, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FailedError(f"another copy into {temp} is still running") from None
        held = os.fstat(fd).st_size
        if held < offset:
            raise FailedError(f"{temp} holds {held} bytes, not the {offset} this copy continues from; deploy again")
        os.ftruncate(fd, offset)
        digest = hashlib.sha256()
        _hash_prefix(fd, offset, digest)
        held = _receive(fd, digest, offset, size)
        if held < size:
            raise FailedError(f"the copy was cut after {held} of {size} bytes (kept: the next deploy continues it)")
        if digest.hexdigest() != sha256:
            Path(temp).unlink()
            raise FailedError(f"the copy's sha256 is {digest.hexdigest()}, not {sha256} (removed)")
        _finish(temp, dest, sha256, mode, owner, stamp)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """``TEMP DEST SHA256 SIZE OFFSET MODE OWNER STAMP`` (MODE, OWNER ``user:group``, STAMP: ``""`` for none)."""
    temp, dest, sha256, size, offset, mode, owner, stamp = argv
    try:
        receive(temp, dest, sha256, int(size), int(offset), mode, owner, stamp)
    except (FailedError, OSError, LookupError) as exc:
        why = exc if isinstance(exc, FailedError) else f"{type(exc).__name__}: {exc}"
        print(f"rbee: {dest}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
