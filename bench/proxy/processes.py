"""Child processes of the benchmark (the canned worker, LiteLLM's proxy): started, watched, always stopped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO

import psutil

from rbee.local.processes import kill_all


class ChildExitedError(Exception):
    """A child process ended while the benchmark needed it; the message holds its log's tail."""


class Child:
    """One command run in its own session, its output in ``log_path``."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise :class:`ChildExitedError` if the process has ended."""
        code = self.process.poll()
        if code is not None:
            raise ChildExitedError(f"{self.name} exited with status {code} (log {self.log_path}):\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; whatever it started goes too."""
        try:
            started = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        kill_all(started)
        self._log.close()
