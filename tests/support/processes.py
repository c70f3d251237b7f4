"""Processes of one test (or module, or session), always killed: also on failure, also what they started.

Every process a :class:`ProcessPool` starts runs in its own session with ``RBEE_TEST_TAG=<uuid>`` in its
environment, which the processes it starts inherit (the workers of a hive, the services of ``rbee up``),
even those that start a session of their own. :meth:`ProcessPool.close` collects the descendants of
everything it started *before* stopping anything, kills the process groups it started, then those
descendants and every process that still carries the tag (workers of a hive that was killed and
restarted are nobody's children any more).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support.waiting import gone

ROOT = Path(__file__).resolve().parents[2]
TAG_ENV = "RBEE_TEST_TAG"


@dataclass
class Proc:
    """One started process, its output in a log file; ``poll``/``wait``/``kill`` as on ``Popen``."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL its process group (its own session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 20.0) -> int:
        """The exit status, waiting up to ``timeout`` seconds (fails with the log tail otherwise)."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {timeout:g} s:\n{self.log_tail()}") from None

    def check_alive(self) -> None:
        """Fail with the log tail when the process has exited."""
        if not self.alive():
            raise AssertionError(f"{self.name} exited ({self.returncode}):\n{self.log_tail()}")


def descendants(pid: int) -> list[psutil.Process]:
    """Every process ``pid`` started, recursively (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


class ProcessPool:
    """Starts processes and kills every one of them, and everything they started, in :meth:`close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tag = uuid.uuid4().hex
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        """Run ``args`` in a session of its own, output in ``<workdir>/<name>-<n>.log``."""
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        full_env = {**os.environ, TAG_ENV: self.tag, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                args, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def tagged(self) -> list[psutil.Process]:
        """Live processes carrying this pool's tag: everything it started, and what those started."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(TAG_ENV) == self.tag and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def leftovers(self) -> list[psutil.Process]:
        """Live processes that the started ones started (workers of a hive), not those started here."""
        own = {proc.pid for proc in self.procs}
        return [proc for proc in self.tagged() if proc.pid not in own]

    def close(self) -> None:
        """Kill everything this pool started and everything those processes started (frozen ones too)."""
        family: dict[int, psutil.Process] = {}
        for proc in self.procs:
            for child in descendants(proc.pid):
                family[child.pid] = child
        for tagged in self.tagged():
            family.setdefault(tagged.pid, tagged)
        for proc in self.procs:  # each started its own session: its group is its pid
            proc.kill()
        for leftover in family.values():
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)
        deadline = time.monotonic() + 5  # orphans are reaped by init: a zombie counts as gone
        while not all(gone(p) for p in family.values()) and time.monotonic() < deadline:
            time.sleep(0.02)


class Freezer:
    """SIGSTOPs processes and always SIGCONTs them again (:meth:`close`)."""

    def __init__(self) -> None:
        self.frozen: set[int] = set()

    def freeze(self, pid: int) -> None:
        self.frozen.add(pid)
        os.kill(pid, signal.SIGSTOP)

    def thaw(self, pid: int) -> None:
        self.frozen.discard(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        for pid in list(self.frozen):
            self.thaw(pid)
