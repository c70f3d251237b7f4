"""Test hosts of several Debian releases, for real: a bookworm + trixie pair over SSH.

The session's hosts run bookworm (unless ``$RBEE_TESTHOSTS_RELEASES`` says otherwise); ``hosts_with_releases``
recreates h2 as trixie for these tests and gives it back its session release afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rbee.testhosts import TestHosts, releases
from tests.hosts.plugin import session_layout

pytestmark = pytest.mark.timeout(600)  # the first session on a machine builds each release's rootfs

PAIR = {"h1": "bookworm", "h2": "trixie"}
REPORT = ". /etc/os-release; echo $VERSION_CODENAME; python3 --version; systemctl is-system-running; g++ --version"


@pytest.fixture
def pair(hosts_with_releases: Callable[..., TestHosts], test_hosts: TestHosts) -> Iterator[TestHosts]:
    test_hosts.restore()  # healthy hosts, whatever an earlier test left
    yield hosts_with_releases(*PAIR.values(), count=len(PAIR))
    test_hosts.restore()


def test_a_bookworm_and_a_trixie_host_side_by_side(pair: TestHosts) -> None:
    for name, release in PAIR.items():
        lines = pair.ssh(name, REPORT, check=True).stdout.splitlines()
        assert lines[0] == release, name
        assert lines[1].startswith(f"Python {releases.RELEASES[release].python}."), f"{name}: {lines[1]}"
        assert lines[2] in ("running", "degraded"), f"{name}: {lines[2]}"
        assert lines[3].startswith("g++ "), f"{name}: {lines[3]}"
        assert pair.release(name) == release
        assert pair.paths.release_file(name).read_text().strip() == release
    # the image can build C++ and a venv (the engine is built on the host: no internet there)
    build = (
        "cd /tmp && printf 'int main(){return 0;}\\n' > t.cc && g++ -O2 -o t t.cc && ./t && make --version >/dev/null"
        " && python3 -m venv v && v/bin/pip --version"
    )
    assert "python 3.13" in pair.ssh("h2", build, check=True).stdout


def test_each_host_reboots_with_its_own_release_and_up_without_releases_keeps_them(pair: TestHosts) -> None:
    pair.ssh("h2", "touch /root/kept", check=True)
    pair.kill("h2")
    pair.stop("h1")
    pair.restore()
    assert pair.ssh("h1", ". /etc/os-release; echo $VERSION_CODENAME", check=True).stdout.strip() == "bookworm"
    assert pair.ssh("h2", ". /etc/os-release; echo $VERSION_CODENAME", check=True).stdout.strip() == "trixie"
    pair.up(len(PAIR))  # no releases: each existing host keeps its own, and its disk
    assert pair.release("h2") == "trixie"
    assert pair.ssh("h2", "test -f /root/kept").returncode == 0
    assert {s.name: s.release for s in pair.status(check_ssh=False)}.items() >= PAIR.items()


def test_up_with_another_release_recreates_the_host_with_a_fresh_disk(pair: TestHosts) -> None:
    pair.ssh("h2", "touch /root/kept", check=True)
    pair.up(2, releases=("bookworm",))  # h2: trixie -> bookworm
    assert pair.release("h2") == "bookworm"
    assert pair.ssh("h2", "test -f /root/kept").returncode == 1
    assert pair.ssh("h2", "python3 --version", check=True).stdout.startswith("Python 3.11.")


def test_the_cli_lists_each_hosts_release(pair: TestHosts) -> None:
    rbee = Path(sys.executable).with_name("rbee")
    listed = subprocess.run([str(rbee), "testhosts", "status"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    cells = [line.split() for line in listed.stdout.splitlines()]  # │ h1 │ 10.210.0.11 │ bookworm │ running │ ...
    rows = {row[1]: row[5] for row in cells if len(row) > 5 and row[1] in PAIR}
    assert rows == PAIR, listed.stdout


def test_an_extra_host_of_another_release_is_removed_afterwards(
    hosts_with_releases: Callable[..., TestHosts], test_hosts: TestHosts
) -> None:
    count = len(test_hosts.names())
    wanted = [*(test_hosts.release(n) for n in test_hosts.names()), "trixie"]
    hosts = hosts_with_releases(*wanted, count=count + 1)
    extra = f"h{count + 1}"
    assert hosts.ssh(extra, ". /etc/os-release; echo $VERSION_CODENAME", check=True).stdout.strip() == "trixie"


def test_afterwards_every_host_runs_the_session_release_again(test_hosts: TestHosts) -> None:
    """Runs after the tests above (file order): ``hosts_with_releases`` restored the session's hosts and releases."""
    count, session_releases = session_layout()
    expected = releases.assign(test_hosts.names(), session_releases)
    assert len(test_hosts.names()) == count
    assert {name: test_hosts.release(name) for name in test_hosts.names()} == expected
    codename = ". /etc/os-release; echo $VERSION_CODENAME"
    assert test_hosts.ssh("h2", codename, check=True).stdout.strip() == expected["h2"]
