"""``rbee top`` against a local cluster (``rbee up``): one frame for scripts, and the live view in a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import start_local_cluster
from tests.support.processes import ProcessPool
from tests.support.services import RBEE, LocalCluster
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path) -> LocalCluster:
    return start_local_cluster(module_processes, tiny_model_path)


def worker_id(cluster: LocalCluster) -> str:
    result = subprocess.run([RBEE, "workers", "ls", "--json"], env=cluster.env(), capture_output=True, text=True,
                            timeout=30, check=True)  # fmt: skip
    return str(json.loads(result.stdout)["workers"][0]["worker_id"])


def test_once_prints_hosts_workers_and_models(cluster: LocalCluster) -> None:
    result = subprocess.run([RBEE, "top", "--once"], env=cluster.env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert worker_id(cluster) in out and "tiny" in out and "idle" in out and "0/2" in out, out
    assert "here" in out and "online" in out and "CPU only" in out, out
    assert "tokens/s" in out and "first token" in out, out


@pytest.mark.parametrize("once", [["--once"], []])
def test_without_a_key_it_fails_clearly(cluster: LocalCluster, once: list[str]) -> None:
    env = {k: v for k, v in cluster.env().items() if k != "RBEE_API_KEY"}
    result = subprocess.run([RBEE, "top", *once], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "MISSING_API_KEY" in result.stderr, result.stderr


class Terminal:
    """``rbee top`` in a pseudo-terminal of its own, as over SSH: what it drew, and keys typed into it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            os.execve(RBEE, [RBEE, "top", "--interval", "0.5"], {**env, "TERM": "xterm", "COLUMNS": "200"})
        self.seen = b""
        self.status: int | None = None

    def read(self) -> str:
        while select.select([self.fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            self.seen += chunk
        return self.seen.decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def exit_status(self, timeout: float = 20.0) -> int | None:
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            self.read()
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.05)
        return self.status

    def close(self) -> None:
        if self.exit_status(0.1) is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.mark.parametrize(("key", "how"), [(b"q", "q"), (b"\x03", "Ctrl-C")])
def test_the_live_view_quits_on_a_key(cluster: LocalCluster, key: bytes, how: str) -> None:
    wid = worker_id(cluster)
    terminal = Terminal(cluster.env())
    try:
        wait_until(lambda: wid in terminal.read(), 60, f"rbee top to show {wid}", 0.1)
        wait_until(lambda: "q quits" in terminal.read(), 30, "the footer", 0.1)
        terminal.type(b"x")  # other keys do nothing
        time.sleep(1.0)
        assert terminal.exit_status(0.1) is None, "rbee top quit on a key that is not q"
        terminal.type(key)
        status = terminal.exit_status(30)
        assert status == 0, f"{how}: exit status {status}\n{terminal.read()[-2000:]}"
        assert "Traceback" not in terminal.read()
        assert "\x1b[?1049l" in terminal.read()  # it left the alternate screen
        lflag = termios.tcgetattr(terminal.fd)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO, "the terminal was left in cbreak mode"
    finally:
        terminal.close()
