"""An atomic file upload for pyinfra: temp file beside the target, fsync, rename over it.

pyinfra's ``files.put`` writes into the existing file (SFTP opens it with ``O_TRUNC``; with sudo, or
the local connector, ``cp`` does the same): a worker that has the old model mmapped then reads a
truncated or half-written file (SIGBUS), and a crash leaves a torn config. ``atomic_put`` writes
``.<name>.rbee-tmp-<random>`` in the target's folder (same filesystem), sets its owner and mode,
``sync``s it, and ``mv -f``s it over the target (rename(2): a new inode, so running processes keep
the old bytes until they reopen the file), then ``sync``s the folder so the rename is durable.

Like ``files.put`` it compares sha256 sums first: an unchanged file is not sent, and a no-op deploy
stays a no-op. Temp files left behind by an interrupted upload are removed by the next run.
"""

from __future__ import annotations

import io
import posixpath
import secrets
import shlex
from collections.abc import Generator
from pathlib import Path
from typing import IO, Any, cast

from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.operation import operation
from pyinfra.api.util import get_file_sha256
from pyinfra.context import host
from pyinfra.facts.files import Directory, File, Sha256File
from pyinfra.operations.util.files import ensure_mode_int

from rbee.deploy.host_state import FUNCTIONS, SUM_FUNCTION, resumable_temp, upload_stamp_command
from rbee.deploy.releases import TEMP_MARK
from rbee.deploys.stream import StreamUpload, Upload, ssh_command


def temp_prefix(dest: str) -> str:
    """Where the temp files of an upload to ``dest`` start: ``<folder>/.<name>.rbee-tmp-``."""
    folder, name = posixpath.split(dest)
    return posixpath.join(folder, f".{name}{TEMP_MARK}")


class LeftoverUploads(FactBase[list[str]]):
    """The rbee temp files (``.*.rbee-tmp-*``) in a folder: what an interrupted upload left behind."""

    def command(self, folder: str) -> str:
        return f"find {shlex.quote(folder)} -maxdepth 1 -type f -name '.*{TEMP_MARK}*' 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())

    @staticmethod
    def default() -> list[str]:
        return []


def _sync(path: str) -> str:
    """fsync one file or folder (coreutils >= 8.24 ``sync FILE``; elsewhere a full ``sync``)."""
    return f"{{ sync {shlex.quote(path)} 2>/dev/null || sync; }}"


@operation()
def atomic_put(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: str | int | None = None,
    sha256: str | None = None,
) -> Generator[Any, None, None]:
    """Put ``src`` (a local path or a file-like object) at ``dest``, replacing it by rename when it differs.

    ``sha256``: the local file's sum when the caller knows it (spares hashing a large model again).
    Owner and mode are set on the temp file before the rename; when only they differ, they are
    changed on ``dest`` in place (metadata, no bytes rewritten).
    """
    folder = posixpath.dirname(dest) or "."
    prefix = temp_prefix(dest)
    leftovers = [p for p in host.get_fact(LeftoverUploads, folder=folder) if p.startswith(prefix)]
    if leftovers:
        yield StringCommand("rm -f -- " + " ".join(shlex.quote(p) for p in leftovers))

    want_mode = ensure_mode_int(mode)
    remote = host.get_fact(File, path=dest)
    if remote is False:
        raise ValueError(f"atomic_put: {dest} exists and is not a file")
    local_sum = sha256 or get_file_sha256(src)
    if remote and host.get_fact(Sha256File, path=dest) == local_sum:
        if want_mode and remote["mode"] != want_mode:
            yield StringCommand(f"chmod {want_mode} {shlex.quote(dest)}")
        if (user and remote["user"] != user) or (group and remote["group"] != group):
            yield StringCommand(f"chown {shlex.quote(_owner(user, group))} {shlex.quote(dest)}")
        if not leftovers:
            host.noop(f"{dest} is up to date")
        return
    if not host.get_fact(Directory, path=folder):
        yield StringCommand(f"mkdir -p {shlex.quote(folder)}")
    yield from upload_commands(src, dest, user, group, mode)


def upload_commands(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: str | int | None = None,
    verify_sha256: str | None = None,
    stamp: str | None = None,
    resume_from: int = 0,
) -> Generator[Any, None, None]:
    """One atomic upload: the temp file, then [verify], owner and mode, fsync, rename, [stamp].

    ``verify_sha256``: the host checks the temp file's sum before the rename (a large file, sent once); the
    temp file of a local path is then named by that sum (``resumable_temp``), and ``resume_from`` (the bytes an
    interrupted copy left there) sends only the rest, appended; ``stamp``: then records
    ``<dest> <sha256> <size> <mtime> <inode>`` there, so later deploys know the file by ``stat`` without
    reading it (``rbee.deploy.host_state``). Such an upload goes by the host's own ``ssh`` process where
    pyinfra's settings for the host allow it (``rbee.deploys.stream``: one remote call, hashed while written);
    otherwise, and for anything else, through pyinfra: the transfer, then one command for the rest.
    """
    folder = posixpath.dirname(dest) or "."
    want_mode = ensure_mode_int(mode)
    if verify_sha256 and isinstance(src, str) and ssh_command(host) is not None:
        yield StreamUpload(
            Upload(src, resumable_temp(dest, verify_sha256), dest, verify_sha256, resume_from,
                   str(want_mode or ""), _owner(user, group) if user or group else "", stamp or "")
        )  # fmt: skip
        return
    resumable = bool(verify_sha256) and isinstance(src, str)
    if verify_sha256 and isinstance(src, str):  # named by its content: an interrupted copy is continued
        temp = resumable_temp(dest, verify_sha256)
    else:
        temp = temp_prefix(dest) + secrets.token_hex(4)
    q_temp, q_dest = shlex.quote(temp), shlex.quote(dest)
    if resume_from and resumable:
        rest = f"{temp}.part"
        yield FileUploadCommand(
            cast(IO[Any], FileTail(str(src), resume_from)), rest, remote_temp_filename=host.get_temp_filename(rest)
        )
        yield StringCommand(f"cat {shlex.quote(rest)} >> {q_temp} && rm -f {shlex.quote(rest)}")
    else:
        yield FileUploadCommand(src, temp, remote_temp_filename=host.get_temp_filename(temp))
    metadata = ""  # owner, mode, check, fsync, rename and stamp: one command after the transfer
    if user or group:
        metadata += f"chown {shlex.quote(_owner(user, group))} {q_temp} && "
    if want_mode:
        metadata += f"chmod {want_mode} {q_temp} && "
    check = ""
    if verify_sha256:
        wrong = shlex.quote(f"rbee: {dest}: the uploaded copy's sha256 is not {verify_sha256}")
        check = (
            f'{FUNCTIONS}{SUM_FUNCTION}if [ "$(rbee_sum {q_temp})" != {shlex.quote(verify_sha256)} ]; then '
            f"rm -f {q_temp}; echo {wrong} >&2; exit 1; fi; "
        )
    record = f" && {{ {upload_stamp_command(dest, verify_sha256, stamp)}; }}" if stamp and verify_sha256 else ""
    yield StringCommand(f"{check}{metadata}{_sync(temp)} && mv -f {q_temp} {q_dest} && {_sync(folder)}{record}")


class FileTail(io.RawIOBase):
    """A local file read from ``offset`` on, as a file object whose start is that offset (pyinfra seeks to 0)."""

    def __init__(self, path: str, offset: int) -> None:
        super().__init__()
        self._file = Path(path).open("rb")  # noqa: SIM115 (closed with this object)
        self._offset = offset
        self._file.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = self._offset if whence == io.SEEK_SET else 0
        return self._file.seek(base + position, whence) - self._offset

    def tell(self) -> int:
        return self._file.tell() - self._offset

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def _owner(user: str | None, group: str | None) -> str:
    """``user:group``, ``user`` or ``:group`` for chown."""
    return f"{user or ''}:{group}" if group else str(user)


@operation()
def put_changed(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: str | int | None = None,
    make_folder: bool = False,
    verify_sha256: str | None = None,
    stamp: str | None = None,
    resume_from: int = 0,
) -> Generator[Any, None, None]:
    """Upload ``src`` to ``dest`` atomically, reading no fact: the deploy's diff decided it differs.

    ``make_folder``: the host has no folder for it yet; ``verify_sha256``, ``stamp``, ``resume_from``: see
    ``upload_commands``.
    """
    if make_folder:
        yield StringCommand(f"mkdir -p {shlex.quote(posixpath.dirname(dest) or '.')}")
    yield from upload_commands(src, dest, user, group, mode, verify_sha256, stamp, resume_from)


@operation()
def set_metadata(
    path: str, user: str | None = None, group: str | None = None, mode: str | int | None = None
) -> Generator[StringCommand, None, None]:
    """Owner and mode of a file whose content is current, set in place (no bytes rewritten)."""
    want_mode = ensure_mode_int(mode)
    if want_mode:
        yield StringCommand(f"chmod {want_mode} {shlex.quote(path)}")
    if user or group:
        yield StringCommand(f"chown {shlex.quote(_owner(user, group))} {shlex.quote(path)}")


@operation()
def remove_leftovers(paths: list[str]) -> Generator[StringCommand, None, None]:
    """Remove the temp files an interrupted upload left (found by the preflight's state)."""
    yield StringCommand("rm -f -- " + " ".join(shlex.quote(p) for p in paths))
