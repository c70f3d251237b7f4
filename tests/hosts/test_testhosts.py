"""The test-host harness against real hosts: boot, SSH, systemd, failure injection, pyinfra, teardown.

No mocks: every assertion goes over the bridge to real sshd/systemd in nspawn containers.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee.spec import load_spec
from rbee.testhosts import TestHosts, naming, spec_for_hosts
from tests.hosts.plugin import session_layout

pytest_plugins = ["tests.hosts.plugin"]  # harmless when tests/conftest.py loads it as well
# The first session on a machine also installs packages and builds the rootfs (~2 min) in the setup.
pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["h1", "h2", "h3"]

# `probe HOST PORT` run on a test host: prints ok / refused / timeout / unreachable / errno-N
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("ok")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("unreachable" if exc.errno in (113, 101) else f"errno-{exc.errno}")
"""

HELLO_UNIT = """\
[Unit]
Description=rbee test-host probe: a tiny HTTP server
[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/hello
[Install]
WantedBy=multi-user.target
"""


def probe(address: str, port: int = 22, timeout: float = 2.0) -> str:
    """Connect from this machine: ok, refused, timeout or unreachable."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else f"errno-{exc.errno}"
    return "ok"


def probe_from(hosts: TestHosts, source: str, target: str, port: int = 22, timeout: float = 2.0) -> str:
    """Connect from test host ``source`` to test host ``target``."""
    command = ["python3", "-c", PROBE, naming.address(target), str(port), str(timeout)]
    return hosts.ssh(source, command, timeout=timeout + 15, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def restored(test_hosts: TestHosts) -> Iterator[TestHosts]:
    """Every test starts from healthy hosts (other modules share them) and leaves them healthy, even on failure."""
    test_hosts.restore()
    yield test_hosts
    test_hosts.restore()


def test_each_host_answers_ssh_with_its_own_hostname_and_a_booted_systemd(test_hosts: TestHosts) -> None:
    for name in HOSTS:
        lines = test_hosts.ssh(name, "hostname; systemctl is-system-running", check=False).stdout.split()
        assert lines[0] == name
        assert lines[1] in ("running", "degraded"), f"{name}: {lines[1]}"
        assert test_hosts.ssh(name, "sudo -n id -un", user="deploy", check=True).stdout.strip() == "root"


def test_hosts_are_isolated_no_default_route_no_outside_dns(test_hosts: TestHosts) -> None:
    routes = test_hosts.ssh("h1", "ip -4 route", check=True).stdout
    assert "default" not in routes and "10.210.0.0/24 dev eth0" in routes
    assert test_hosts.ssh("h1", "cat /etc/resolv.conf", check=True).stdout.strip() == "nameserver 127.0.0.1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    keys = {test_hosts.ssh(n, "cat /etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout for n in HOSTS}
    assert len(keys) == len(HOSTS), "every host has its own SSH host key"


def test_hosts_reach_each_other_on_the_bridge(test_hosts: TestHosts) -> None:
    for source in HOSTS:
        for target in HOSTS:
            if target != source:
                assert probe_from(test_hosts, source, target) == "ok", f"{source} -> {target}"
    pings = " && ".join(f"ping -c1 -W2 {naming.address(t)} >/dev/null" for t in ("h2", "h3"))
    assert test_hosts.ssh("h1", pings).returncode == 0


def test_an_enabled_unit_survives_stop_and_start_of_its_host(test_hosts: TestHosts) -> None:
    install = (
        "mkdir -p /srv/hello && echo hello from $(hostname) > /srv/hello/index.html && "
        f"cat > /etc/systemd/system/rbee-hello.service <<'EOF'\n{HELLO_UNIT}EOF\n"
        "systemctl daemon-reload && systemctl enable --now rbee-hello.service"
    )
    answers = "for i in $(seq 50); do curl -sf localhost:8080/ && exit; sleep 0.1; done; exit 1"
    test_hosts.ssh("h2", install, check=True)
    try:
        test_hosts.ssh("h2", answers, check=True)

        test_hosts.stop("h2")
        assert not test_hosts.is_running("h2")
        assert probe(test_hosts.address("h2")) == "refused"

        assert test_hosts.start("h2") in ("running", "degraded")
        assert test_hosts.ssh("h2", "systemctl is-active rbee-hello.service").stdout.strip() == "active"
        test_hosts.ssh("h2", answers, check=True)
        with urllib.request.urlopen(f"http://{test_hosts.address('h2')}:8080/", timeout=5) as response:
            assert response.read().decode().strip() == "hello from h2"
    finally:
        test_hosts.restore()
        cleanup = "systemctl disable --now rbee-hello.service; rm -rf /etc/systemd/system/rbee-hello.service /srv/hello"
        test_hosts.ssh("h2", f"{cleanup}; systemctl daemon-reload")


def test_kill_crashes_the_host_and_connections_are_refused(test_hosts: TestHosts) -> None:
    test_hosts.kill("h2")
    assert not test_hosts.is_running("h2")
    assert probe(test_hosts.address("h2")) == "refused"
    assert test_hosts.ssh("h2", "true", connect_timeout=2).returncode == 255
    test_hosts.start("h2")
    assert test_hosts.ssh("h2", "hostname").stdout.strip() == "h2"


def test_pulled_cable_gives_timeouts(test_hosts: TestHosts) -> None:
    test_hosts.cable("h3", False)
    assert probe(test_hosts.address("h3")) == "timeout"
    assert probe_from(test_hosts, "h1", "h3") == "timeout"
    assert test_hosts.is_running("h3")  # the host itself is fine
    test_hosts.cable("h3", True)
    assert probe(test_hosts.address("h3")) == "ok"


def test_partition_cuts_one_pair_only_and_heals(test_hosts: TestHosts) -> None:
    test_hosts.partition("h1", "h3")
    assert probe_from(test_hosts, "h1", "h3") == "timeout"
    assert probe_from(test_hosts, "h3", "h1") == "timeout"
    assert probe_from(test_hosts, "h1", "h2") == "ok"
    assert probe_from(test_hosts, "h2", "h3") == "ok"
    assert probe(test_hosts.address("h3")) == "ok"  # this machine is not part of the cut
    test_hosts.heal("h3", "h1")  # either order names the same pair
    assert probe_from(test_hosts, "h1", "h3") == "ok"


def test_paused_host_accepts_tcp_but_never_answers(test_hosts: TestHosts) -> None:
    test_hosts.pause("h2")
    assert probe(test_hosts.address("h2")) == "ok"  # the kernel still completes the handshake
    assert test_hosts.ssh("h2", "true", connect_timeout=2, timeout=8).returncode != 0
    test_hosts.resume("h2")
    assert test_hosts.ssh("h2", "true").returncode == 0


def test_pyinfra_reaches_every_host_through_the_spec_adapter(test_hosts: TestHosts, tmp_path: Path) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(spec_for_hosts(HOSTS, cluster="testhosts", queen_host="h1"))
    spec = load_spec(spec_file)
    assert [h.address for h in spec.hosts] == [naming.address(n) for n in HOSTS]
    pyinfra = Path(sys.executable).with_name("pyinfra")
    result = subprocess.run(
        [str(pyinfra), "-y", "inventory/inventory.py", "exec", "--", "hostname"],
        cwd=REPO, env={**os.environ, "RBEE_SPEC": str(spec_file)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr  # pyinfra reports progress on stderr
    assert result.returncode == 0, output
    for name in HOSTS:
        assert f"[{name}] {name}" in output, output


def _leftovers(hosts: TestHosts) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(naming.NETNS_PREFIX)]
    mounts = subprocess.run(["mount"], capture_output=True, text=True, check=True).stdout
    found += [f"mount {line}" for line in mounts.splitlines() if str(hosts.paths.hosts) in line]
    found += [f"mount {line}" for line in mounts.splitlines() if " on /run/netns " in line and not netns.strip()]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if ": rbee-" in line]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if naming.NFT_TABLE in line]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"**/{naming.CGROUP_DIR}")]
    found += [f"host dir {p}" for p in hosts.paths.hosts.glob("*")]
    return found


def test_down_leaves_nothing_behind(test_hosts: TestHosts, request: pytest.FixtureRequest) -> None:
    test_hosts.partition("h1", "h2")  # a firewall table to clean as well
    test_hosts.down()
    assert _leftovers(test_hosts) == []
    route = subprocess.run(["ip", "route", "show", f"{naming.SUBNET}.0/24"], capture_output=True, text=True).stdout
    assert route == ""  # (no probing here: without the bridge, 10.210.0.x would go out the default route)
    test_hosts.down()  # idempotent
    assert _leftovers(test_hosts) == []
    later = request.session.items[request.session.items.index(request.node) + 1 :]
    if any("test_hosts" in getattr(item, "fixturenames", ()) for item in later):
        test_hosts.up(len(HOSTS), releases=session_layout()[1])  # the session's later tests expect running hosts
