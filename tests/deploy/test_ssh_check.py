"""``rbee.deploy.ssh_check`` without test hosts: targets from the spec and pyinfra data, the classification of
connection errors, the table. The outcomes against real sshds are asserted in ``features/preflight.feature``."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rbee.deploy.ssh_check import (
    Outcome,
    SshCheck,
    SshTarget,
    _socket_reason,
    check_ssh,
    describe,
    spec_targets,
    ssh_failures,
    table,
)
from rbee.spec import load_spec

SPEC = """
version: 1
cluster: t
hosts:
  - {name: here, address: localhost}
  - name: box
    address: 127.0.0.2
    ssh: {user: deploy, port: 2222, key: keys/id_box, known_hosts_file: /tmp/kh}
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once the socket is: connections are refused


def test_targets_come_from_the_spec_with_the_key_resolved_from_its_folder(tmp_path: Path) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC)
    (tmp_path / "keys").mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "keys/id_box")], check=True)
    spec = load_spec(spec_file)
    targets = spec_targets(spec, tmp_path)
    assert targets == [SshTarget("box", "127.0.0.2", 2222, "deploy", str(tmp_path / "keys/id_box"), "/tmp/kh")]
    assert spec_targets(spec, tmp_path, ["here"]) == [], "localhost needs no SSH"


def test_targets_from_pyinfra_host_data() -> None:
    data = {"ssh_hostname": "10.0.0.5", "ssh_port": 2200, "ssh_user": "ops", "ssh_key": "/k",
            "ssh_known_hosts_file": "/dev/null"}  # fmt: skip
    assert SshTarget.from_host_data("h", data) == SshTarget("h", "10.0.0.5", 2200, "ops", "/k", "/dev/null")
    assert SshTarget.from_host_data("h", {}) == SshTarget("h", "h")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "no-route"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "no-route"),
        (TimeoutError("timed out"), "timeout"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "unresolved"),
    ],
)
def test_socket_errors_are_classified(exc: OSError, reason: str) -> None:
    assert _socket_reason(exc) == reason


def test_a_closed_port_is_unreachable_refused_with_the_hint_to_start_sshd() -> None:
    port = _closed_port()
    found = check_ssh(SshTarget("box", "127.0.0.1", port), timeout_s=2)
    assert found.outcome is Outcome.UNREACHABLE and found.reason == "refused", describe(found)
    assert "Connection refused" in found.error
    assert f"nothing accepts SSH on port {port}" in found.hint and "systemctl start ssh" in found.hint
    assert found.latency_ms is None and 0 < found.connect_ms < 2000


def test_a_name_that_does_not_resolve_is_unreachable_with_the_hint_to_fix_the_address() -> None:
    found = check_ssh(SshTarget("box", "no-such-host.invalid"), timeout_s=2)
    assert found.outcome is Outcome.UNREACHABLE and found.reason == "unresolved", describe(found)
    assert "fix hosts[].address" in found.hint


def test_a_missing_key_file_is_an_auth_failure_before_any_connection(tmp_path: Path) -> None:
    key = tmp_path / "nope"
    found = check_ssh(SshTarget("box", "127.0.0.1", _closed_port(), key=str(key)), timeout_s=2)
    assert found.outcome is Outcome.AUTH_FAILED and found.reason == "key-unreadable", describe(found)
    assert f"cannot use the key file {key}" in found.hint


def test_table_and_json_form() -> None:
    ok = SshCheck("h1", "10.0.0.1", 22, "root", Outcome.OK, latency_ms=0.42, round_trips_ms=[0.42])
    bad = SshCheck("h2", "10.0.0.2", 22, "root", Outcome.UNREACHABLE, "timeout", "timed out", "check that h2 is up")
    lines = table([ok, bad]).splitlines()
    assert lines[0].split() == ["host", "result", "latency", "hint"]
    assert lines[1].split() == ["h1", "ok", "0.4", "ms", "-"]
    assert lines[2].split()[:4] == ["h2", "unreachable", "(timeout)", "-"] and lines[2].endswith("check that h2 is up")
    assert json.loads(json.dumps(bad.as_dict()))["outcome"] == "unreachable"
    assert describe(bad) == "h2: unreachable (timeout): timed out; check that h2 is up"


def test_ssh_failures_keeps_only_the_hosts_that_are_not_ok(tmp_path: Path) -> None:
    port = _closed_port()
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC.replace("port: 2222", f"port: {port}").replace("keys/id_box", str(tmp_path / "k")))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    failures = ssh_failures(load_spec(spec_file), spec_file, ["here", "box"], timeout_s=2)
    assert list(failures) == ["box"] and failures["box"].reason == "refused"


def test_rbee_preflight_prints_one_table_and_exits_1_when_a_host_is_not_ok(tmp_path: Path) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC.replace("port: 2222", f"port: {_closed_port()}").replace("keys/id_box", "k"))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    rbee = str(Path(sys.executable).parent / "rbee")
    done = subprocess.run([rbee, "preflight", "--timeout", "2", str(spec_file)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["host", "result", "latency", "hint"] and len(lines) == 2
    assert lines[1].startswith("box") and "unreachable (refused)" in lines[1]
    as_json = subprocess.run([rbee, "preflight", "--json", "--timeout", "2", str(spec_file)], capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["hosts"]["box"]["reason"] == "refused"
