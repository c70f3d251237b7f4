"""Small helpers over the machine: commands, processes, mounts, cgroups."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class TestHostsError(Exception):
    """A test-host operation failed; the message says what and, where known, why."""

    __test__ = False  # not a pytest test class


def run(command: Sequence[str], *, check: bool = True, timeout: float | None = 60) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; raise ``TestHostsError`` with its stderr when ``check`` fails."""
    result = subprocess.run(list(command), capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise TestHostsError(f"`{' '.join(command)}` failed (exit {result.returncode}): {detail}")
    return result


def process_state(pid: int) -> str | None:
    """The kernel's state letter of ``pid`` (``R``, ``S``, ``Z``...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split(" ", 1)[0]


def is_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie that nobody reaped yet counts as dead)."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def cmdline(pid: int, *, settle: float = 1.0) -> list[str]:
    """The argument vector of ``pid`` (empty when gone).

    While a process is inside ``execve`` the kernel shows an empty argument vector for a moment (the new
    memory is in place, its arguments not yet): a live process read that way is read again for up to
    ``settle`` seconds, so ``sh -c 'exec systemd-nspawn ...'`` never looks like some other process.
    """
    deadline = time.monotonic() + settle
    while True:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        if raw or not is_alive(pid) or time.monotonic() >= deadline:
            return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        time.sleep(0.001)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split(" ")[1]) == pid:
            found.append(int(entry.name))
    return found


def all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; a process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _unescape_mount_path(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_points() -> list[Path]:
    """Every mount point of this mount namespace (from /proc/self/mountinfo)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [Path(_unescape_mount_path(line.split(" ")[4])) for line in lines]


def is_mount_point(path: Path) -> bool:
    return path in mount_points()


def unmount_under(folder: Path) -> None:
    """Unmount every mount at or below ``folder``, deepest first (lazily when busy)."""
    inside = sorted(
        (m for m in mount_points() if m == folder or folder in m.parents), key=lambda p: len(p.parts), reverse=True
    )
    for point in inside:
        if run(["umount", str(point)], check=False).returncode != 0:
            run(["umount", "-l", str(point)], check=False)


def cgroup_roots() -> list[Path]:
    """Hierarchies a host's cgroup must exist in: cgroup2 + name=systemd on a hybrid machine, else cgroup2."""
    if (CGROUP_ROOT / "unified").is_dir():
        return [CGROUP_ROOT / "unified", CGROUP_ROOT / "systemd"]
    if run(["stat", "-fc", "%T", str(CGROUP_ROOT)], check=False).stdout.strip() == "cgroup2fs":
        return [CGROUP_ROOT]
    return []


def remove_cgroup_tree(path: Path) -> None:
    """rmdir a cgroup and its sub-cgroups, deepest first (cgroups that still hold processes stay)."""
    if not path.is_dir():
        return
    subdirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for sub in [*subdirs, path]:
        with contextlib.suppress(OSError):
            sub.rmdir()


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (waiting up to ``timeout`` s for another process to let go)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TestHostsError(f"{what}: another process holds {path} for more than {timeout:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
