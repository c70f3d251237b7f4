"""Start the local services as child processes and stop them, leaving nothing behind."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import psutil

from rbee.local.plan import LocalService


class ServiceProcess:
    """One service (queen or hive) run as ``python -m rbee_runtime.<kind> --config FILE``; ``log_format``: the
    spec's ``runtime.log_format`` (``json``: ``--log-format json``; text: the environment's choice)."""

    def __init__(self, service: LocalService, log_dir: Path, log_format: str = "text") -> None:
        self.service = service
        self.log_format = log_format
        self.log_path = log_dir / f"{service.name.replace(' ', '-')}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the service in its own session, so a terminal Ctrl+C reaches only ``rbee up``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", f"rbee_runtime.{self.service.kind}", "--config", str(self.service.config)]
        if self.log_format == "json":
            command += ["--log-format", "json"]
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exit_code(self) -> int | None:
        """``None`` while running, else the exit status."""
        return self._process.poll() if self._process else None

    def descendants(self) -> list[psutil.Process]:
        """Every process this service started, recursively (its workers)."""
        try:
            return psutil.Process(self.pid).children(recursive=True) if self.pid else []
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace_s: float) -> list[str]:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL it and anything it left running.

        Returns what had to be forced (empty when the service stopped cleanly with its workers).
        """
        if self._process is None:
            return []
        forced: list[str] = []
        started = self.descendants()
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                forced.append(f"{self.service.name} did not stop within {grace_s:g}s and was killed")
        leftovers = kill_all(started)
        if leftovers:
            forced.append(f"{self.service.name} left {len(leftovers)} process(es) running; they were stopped")
        if self._log:
            self._log.close()
        return forced

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the service's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def kill_all(processes: Iterable[psutil.Process], grace_s: float = 5.0) -> list[int]:
    """Terminate the processes still alive, then kill the stubborn; returns the pids that had to go."""
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, stubborn = psutil.wait_procs(alive, timeout=grace_s)
    for process in stubborn:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    return [p.pid for p in alive]


def wait_for_exit(processes: list[ServiceProcess], poll_s: float = 0.5) -> ServiceProcess:
    """Block until one of the services exits; return it."""
    while True:
        for process in processes:
            if process.exit_code() is not None:
                return process
        time.sleep(poll_s)
