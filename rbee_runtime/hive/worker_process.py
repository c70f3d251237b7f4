"""One worker OS process: launch it, know it again (pid + start time), signal it, wait for it, read its log.

A worker runs in its own session, so its pid is its process group: a signal to the hive's
terminal does not reach it, and the hive stops it with everything it started. The hive only
signals a process it started (its child) or one it found again after a restart with the
recorded pid *and* start time, so a reused pid is never hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from rbee_runtime.common.log_setup import LOG_FORMAT_ENV

LOG_TAIL_LINES = 20
#: How close a process's start time must be to the recorded one to be the same process.
START_TIME_TOLERANCE_S = 0.5


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 8192) -> str:
    """The last ``lines`` lines of a log file ('' when unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


#: The worker's log line of a failed load: ``load failed [VRAM_OOM]: ...`` (``rbee_runtime.worker.server``).
_LOAD_FAILED = re.compile(r"load failed \[([A-Z][A-Z_]+)\]: ")


def failure_code(log_text: str) -> str | None:
    """The error code of the last failed load the worker logged (``VRAM_OOM``, ``GPU_NOT_AVAILABLE``, ...)."""
    codes = _LOAD_FAILED.findall(log_text)
    return codes[-1] if codes else None


def describe_exit(rc: int | None) -> str:
    """How a worker process ended, for ``last_error`` (``rc`` None: not our child, status unknown)."""
    if rc is None:
        return "worker process is gone"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"worker process was killed by {name}"
    return f"worker process exited with status {rc}"


def _start_line(cmd: list[str]) -> str:
    """The line the hive writes into a worker's log before starting it (a JSON object when the logs are JSON)."""
    if os.environ.get(LOG_FORMAT_ENV) == "json":
        when = datetime.now(UTC).isoformat(timespec="milliseconds")
        line = {"time": when, "level": "INFO", "logger": __name__, "message": f"hive starts: {' '.join(cmd)}",
                "service": "hive"}  # fmt: skip
        return json.dumps(line) + "\n"
    return f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} hive starts: {' '.join(cmd)}\n"


class WorkerProcess:
    """A worker process: the hive's child (``popen``) or one found again after a hive restart (``psutil`` only)."""

    def __init__(self, popen: subprocess.Popen[bytes] | None, proc: psutil.Process | None) -> None:
        self.popen = popen
        self.proc = proc

    @classmethod
    def launch(cls, cmd: list[str], log_path: Path) -> WorkerProcess:
        """Start ``cmd`` in its own session, output appended to ``log_path`` (OSError when it cannot start)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as fh:
            fh.write(_start_line(cmd).encode())
            fh.flush()
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        proc: psutil.Process | None
        try:
            proc = psutil.Process(popen.pid)
            proc.create_time()
        except psutil.Error:
            proc = None
        return cls(popen, proc)

    @classmethod
    def find(cls, pid: int, create_time: float, marker: str) -> WorkerProcess | None:
        """The recorded process if it still runs (same pid, same start time, ``marker`` in its args)."""
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - create_time) > START_TIME_TOLERANCE_S:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE or marker not in proc.cmdline():
                return None
            return cls(None, proc)
        except psutil.Error:
            return None

    @property
    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        return self.proc.pid if self.proc is not None else None

    def identity(self) -> tuple[int, float] | None:
        """(pid, start time) to find the process again after a hive restart; None when unknown."""
        if self.proc is None:
            return None
        try:
            return self.proc.pid, self.proc.create_time()
        except psutil.Error:
            return None

    def poll(self) -> tuple[bool, int | None]:
        """(exited, exit status); status None when it is not our child."""
        if self.popen is not None:
            rc = self.popen.poll()
            return rc is not None, rc
        if self.proc is not None:
            try:
                alive = self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            return not alive, None
        return True, None

    async def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; whether it did."""
        deadline = time.monotonic() + timeout
        while True:
            exited, _ = self.poll()
            if exited:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        """Signal the process group (its pid is the group id: it started its own session)."""
        pid = self.pid
        if pid is None:
            return
        if self.popen is None and self.proc is not None:
            try:
                if not self.proc.is_running():  # also guards against pid reuse (start time checked)
                    return
            except psutil.Error:
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
