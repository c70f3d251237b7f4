"""A builder host reached with the OpenSSH client (``ssh``/``scp``), for builds outside a pyinfra deploy.

``rbee engine build --on`` style tools and ``scripts/cuda-build-check`` use it; the deploy uses its own
pyinfra connection (``rbee.deploys.builder.PyinfraRemote``). Both satisfy ``rbee.engine.remote_build.Remote``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


class SshRemote:
    """``ssh <options> -- <destination> <command>``; files with ``scp <options> --``.

    ``--`` ends the options, so a destination can never be read as one (``-oProxyCommand=…``).
    """

    def __init__(self, name: str, destination: str, options: Sequence[str] = ()) -> None:
        self.name = name
        self.destination = destination
        self.options = [o for o in options if o != "--"]

    def run(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        try:
            done = subprocess.run(
                ["ssh", *self.options, "--", self.destination, command],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            return 124, f"timed out after {timeout} s: {partial}"
        return done.returncode, done.stdout + done.stderr

    def put(self, local: Path, remote: str) -> None:
        self._scp(str(local), f"{self.destination}:{remote}")

    def get(self, remote: str, local: Path) -> None:
        self._scp(f"{self.destination}:{remote}", str(local))

    def _scp(self, source: str, target: str) -> None:
        done = subprocess.run(
            ["scp", "-q", *self.options, "--", source, target], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise OSError(f"scp {source} {target} failed: {done.stderr.strip()}")
