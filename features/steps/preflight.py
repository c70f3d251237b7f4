"""Steps of the SSH preflight (real test hosts; the product's ``rbee.deploy.ssh_check`` connects, classifies and
measures, ``rbee.deploy.probe`` judges) and the hive preflight (real hive and queen processes)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from pytest_bdd import given, parsers, then, when

from features.steps.data_fixtures import GIB, Hives, QueenProcess, heartbeat, parse_size, wait_for
from rbee.deploy.probe import HostFacts, Requirements, judge, parse_probe, probe_input
from rbee.deploy.ssh_check import Outcome, SshCheck, SshTarget, check_ssh, describe
from rbee.testhosts import TestHosts, spec_for_hosts
from rbee_runtime import API_VERSION, __version__
from rbee_runtime.hive.resources import check_ram, detect_backends, detect_gpus

CONNECT_TIMEOUT_S = 3.0
NO_HOST_ADDRESS = "10.210.0.99"  # on the test hosts' bridge, but no host has it


def target(hosts: TestHosts, name: str, **changes: Any) -> SshTarget:
    """The test host ``name`` as the spec of ``spec_for_hosts`` describes it (test key, host keys not checked)."""
    return replace(SshTarget(name, hosts.address(name), key=str(hosts.paths.key), known_hosts_file="/dev/null"),
                   **changes)  # fmt: skip


def probe(hosts: TestHosts, name: str, **changes: Any) -> SshCheck:
    """The product's SSH preflight of one host, running the deploy's probe script over the same connection."""
    return check_ssh(target(hosts, name, **changes), timeout_s=CONNECT_TIMEOUT_S, command="sh -s",
                     stdin=probe_input("/opt/rbee"))  # fmt: skip


# --------------------------------------------------------------------------- SSH preflight


@given("the SSH test hosts are up", target_fixture="hosts")
def _hosts_up(test_hosts: TestHosts) -> TestHosts:
    test_hosts.up(3)  # idempotent: earlier tests may have taken them down
    running = [s.name for s in test_hosts.status(check_ssh=False) if s.running]
    assert {"h1", "h2", "h3"} <= set(running), running
    return test_hosts


@given(parsers.parse('host "{name}" is powered off'))
def _powered_off(hosts: TestHosts, request: pytest.FixtureRequest, name: str) -> None:
    request.addfinalizer(lambda: hosts.start(name))  # the next scenarios find it up again
    hosts.stop(name)
    assert not hosts.is_running(name)


@given(parsers.parse('sshd is stopped on "{name}"'))
def _sshd_stopped(hosts: TestHosts, request: pytest.FixtureRequest, name: str) -> None:
    def reboot() -> None:  # sshd cannot be started over SSH any more: a clean reboot brings it back
        hosts.stop(name)
        hosts.start(name)

    request.addfinalizer(reboot)
    hosts.ssh(name, "systemctl stop ssh.socket ssh.service", check=True)
    assert hosts.is_running(name), "the host itself stays up"


@given(parsers.parse('the network cable of "{name}" is pulled'))
def _cable_pulled(hosts: TestHosts, request: pytest.FixtureRequest, name: str) -> None:
    request.addfinalizer(lambda: hosts.cable(name, True))
    hosts.cable(name, False)


@given(parsers.parse('a known_hosts file that records another key for "{name}"'))
def _wrong_known_hosts(data_ctx: dict[str, Any], hosts: TestHosts, tmp_path: Path, name: str) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "impostor", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text(f"{hosts.address(name)} {kind} {blob}\n")
    data_ctx["known_hosts"] = known


@when(parsers.parse('the SSH preflight probes "{name}" with the deploy key'))
def _probe(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    data_ctx["preflight"] = probe(hosts, name)


@when(parsers.parse('the SSH preflight probes "{name}" with a key the host does not know'))
def _probe_wrong_key(data_ctx: dict[str, Any], hosts: TestHosts, tmp_path: Path, name: str) -> None:
    key = tmp_path / "stranger_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", str(key)], check=True)
    assert key.read_bytes() != hosts.paths.key.read_bytes()
    data_ctx["preflight"] = probe(hosts, name, key=str(key))
    data_ctx["wrong_key"] = key


@when(parsers.parse('the SSH preflight probes "{name}" checking host keys against that file'))
def _probe_known_hosts(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    data_ctx["preflight"] = probe(hosts, name, known_hosts_file=str(data_ctx["known_hosts"]))


@when(parsers.parse('the SSH preflight probes a host "{name}" at an address where no host answers'))
def _probe_nowhere(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    data_ctx["preflight"] = check_ssh(replace(target(hosts, "h1"), name=name, address=NO_HOST_ADDRESS),
                                      timeout_s=CONNECT_TIMEOUT_S)  # fmt: skip


@when(parsers.parse('the SSH preflight measures the latency to "{name}" {count:d} times over one connection'))
def _latency(data_ctx: dict[str, Any], hosts: TestHosts, name: str, count: int) -> None:
    data_ctx["preflight"] = check_ssh(target(hosts, name), timeout_s=CONNECT_TIMEOUT_S, round_trips=count)
    assert len(data_ctx["preflight"].round_trips_ms) == count


@when(parsers.parse('"rbee preflight --json" runs on a spec of the hosts {names}'))
def _cli(data_ctx: dict[str, Any], hosts: TestHosts, tmp_path: Path, names: str) -> None:
    wanted = [n.strip().strip('"') for n in names.replace(" and ", ",").split(",") if n.strip()]
    spec = tmp_path / "cluster.yaml"
    spec.write_text(spec_for_hosts(wanted, cluster="preflight", queen_host=wanted[0], paths=hosts.paths))
    rbee = Path(sys.executable).parent / "rbee"
    done = subprocess.run([str(rbee), "preflight", "--json", "--timeout", str(CONNECT_TIMEOUT_S), str(spec)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    data_ctx["cli"] = done
    data_ctx["cli_hosts"] = json.loads(done.stdout)["hosts"]


def _preflight(data_ctx: dict[str, Any]) -> SshCheck:
    found: SshCheck = data_ctx["preflight"]
    return found


def _facts(data_ctx: dict[str, Any]) -> HostFacts:
    found = _preflight(data_ctx)
    assert found.ok and found.exit_status == 0, describe(found)
    return parse_probe(found.output)


@then(parsers.parse('"{name}" is reachable and accepts the key'))
def _reachable(data_ctx: dict[str, Any], name: str) -> None:
    found = _preflight(data_ctx)
    assert found.host == name and found.outcome is Outcome.OK, describe(found)
    assert found.error == "" and found.hint == ""
    assert _facts(data_ctx).complete, "the probe ran to its end"


@then(parsers.parse("the measured latency is above 0 ms and below the connect timeout"))
def _latency_measured(data_ctx: dict[str, Any]) -> None:
    found = _preflight(data_ctx)
    assert found.latency_ms is not None and 0 < found.latency_ms < CONNECT_TIMEOUT_S * 1000, found
    assert found.latency_ms == statistics.median(found.round_trips_ms) and len(found.round_trips_ms) >= 1
    assert 0 < found.connect_ms < CONNECT_TIMEOUT_S * 3 * 1000  # connect + banner + login, each bounded
    print(f"SSH preflight: {describe(found)}")


@then("the probe reports Linux with Python 3.11 or newer, the venv module and systemd")
def _probe_facts(data_ctx: dict[str, Any]) -> None:
    facts = _facts(data_ctx)
    assert facts.os == "Linux" and facts.arch and facts.kernel
    assert facts.python is not None and facts.python[:2] >= (3, 11), facts.python_text
    assert facts.python_venv and facts.systemd
    assert facts.gpus == []


@then(parsers.parse('the probe reports the RAM and free disk of "{name}"'))
def _probe_resources(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    facts = _facts(data_ctx)
    meminfo = hosts.ssh(name, "awk '/^MemTotal:/{print $2}' /proc/meminfo", check=True).stdout
    assert facts.ram_total_bytes == int(meminfo) * 1024
    assert 0 < facts.ram_available_bytes <= facts.ram_total_bytes
    assert facts.disk_free_bytes > 0


@then(parsers.parse('"{name}" has no problem for a cpu deployment needing {ram} of RAM and {disk} of disk'))
def _fit(data_ctx: dict[str, Any], name: str, ram: str, disk: str) -> None:
    facts = _facts(data_ctx)
    needs = Requirements(backend="cpu", gpus=[], min_ram_bytes=parse_size(ram), min_disk_bytes=parse_size(disk))
    assert judge(facts, needs) == []
    assert facts.backend_for("auto") == "cpu"


@then(parsers.parse('"{name}" is not fit for a cpu deployment needing {ram} of RAM, because of its RAM'))
def _not_fit_ram(data_ctx: dict[str, Any], name: str, ram: str) -> None:
    facts = _facts(data_ctx)
    problems = judge(facts, Requirements(backend="cpu", gpus=[], min_ram_bytes=parse_size(ram), min_disk_bytes=0))
    assert len(problems) == 1 and problems[0].startswith("RAM "), problems
    assert f"{facts.ram_total_bytes / GIB:.1f} GiB" in problems[0]


@then(parsers.parse('"{name}" is not fit for a cuda deployment, because nvidia-smi lists no GPU'))
def _not_fit_cuda(data_ctx: dict[str, Any], name: str) -> None:
    facts = _facts(data_ctx)
    problems = judge(facts, Requirements(backend="cuda", gpus="all", min_ram_bytes=0, min_disk_bytes=0))
    assert problems == ["backend cuda, but nvidia-smi lists no GPU (driver missing?); use backend: cpu explicitly"], (
        problems
    )


@then(parsers.parse("every round trip took more than 0 ms and less than {limit:d} ms"))
def _latency_ok(data_ctx: dict[str, Any], limit: int) -> None:
    latencies = _preflight(data_ctx).round_trips_ms
    assert all(0 < ms < limit for ms in latencies), latencies
    print(f"SSH preflight: latency {statistics.median(latencies):.2f} ms (OK)")


def _assert_unreachable(found: SshCheck, name: str, reasons: set[str]) -> None:
    assert found.host == name and found.outcome is Outcome.UNREACHABLE, describe(found)
    assert found.reason in reasons, describe(found)
    assert found.latency_ms is None and found.output == ""
    assert found.connect_ms < (CONNECT_TIMEOUT_S + 2) * 1000, "the connect timeout bounds the wait"


@then(parsers.parse('"{name}" is reported unreachable because the connection is refused, with the hint to start sshd'))
def _refused(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    found = _preflight(data_ctx)
    _assert_unreachable(found, name, {"refused"})
    assert "Connection refused" in found.error
    assert f"{name} ({hosts.address(name)}) answers but nothing accepts SSH on port 22" in found.hint
    assert "systemctl start ssh" in found.hint and "hosts[].ssh.port" in found.hint


@then(parsers.parse('"{name}" is reported unreachable with the hint to check that it is up and on the network'))
def _unreachable(data_ctx: dict[str, Any], name: str) -> None:
    found = _preflight(data_ctx)
    _assert_unreachable(found, name, {"timeout", "no-route"})
    assert "timed out" in found.error or "No route to host" in found.error, found.error
    assert f"check that {name} is up and on the network (ping {found.address})" in found.hint


@then(parsers.parse('"{name}" is reported as an authentication failure with a hint about the key'))
def _auth_failure(data_ctx: dict[str, Any], name: str) -> None:
    found = _preflight(data_ctx)
    assert found.host == name and found.outcome is Outcome.AUTH_FAILED and found.reason == "key-refused", found
    assert "Permission denied" in found.error and found.latency_ms is None and found.output == ""
    key = data_ctx["wrong_key"]
    assert f"root@{found.address} refuses the key {key}" in found.hint
    assert f"ssh-copy-id -i {key}.pub root@{found.address}" in found.hint and "authorized_keys" in found.hint


@then(parsers.parse('"{name}" is reported as a host-key mismatch with the hint to remove the old entry'))
def _host_key_mismatch(data_ctx: dict[str, Any], name: str) -> None:
    found = _preflight(data_ctx)
    assert found.host == name and found.outcome is Outcome.HOST_KEY_MISMATCH, describe(found)
    assert found.latency_ms is None and found.output == "", "nothing runs on a host that may be an impostor"
    known = data_ctx["known_hosts"]
    assert f"ssh-keygen -f {known} -R '{found.address}'" in found.hint
    assert "SHA256:" in found.error and "intercepting" in found.hint


@then(parsers.parse('rbee preflight exits {code:d} and reports {expected}'))
def _cli_result(data_ctx: dict[str, Any], code: int, expected: str) -> None:
    done = data_ctx["cli"]
    assert done.returncode == code, done.stderr
    found: dict[str, Any] = data_ctx["cli_hosts"]
    for part in expected.replace(" and ", ", ").split(", "):
        name, _, outcome = part.partition(" ")
        row = found[name.strip('"')]
        assert row["outcome"] == outcome, row
        if outcome == "ok":
            assert 0 < row["latency_ms"] < CONNECT_TIMEOUT_S * 1000 and row["hint"] == "", row
        else:
            assert row["latency_ms"] is None and row["hint"], row


# --------------------------------------------------------------------------- hive preflight


@given(parsers.parse('a running hive "{hive_id}"'))
def _running_hive(data_ctx: dict[str, Any], hive_procs: Hives, hive_id: str) -> None:
    data_ctx["hive"] = hive_procs.start(hive_procs.config(hive_id))


@given("a running queen for the preflight", target_fixture="queen")
def _queen(queen_procs: Any) -> QueenProcess:
    queen: QueenProcess = queen_procs("preflight-queen")
    return queen


@given(parsers.parse('a running hive "{hive_id}" that reports to the queen'))
def _hive_to_queen(data_ctx: dict[str, Any], hive_procs: Hives, queen: QueenProcess, hive_id: str) -> None:
    data_ctx["hive"] = hive_procs.start(hive_procs.config(hive_id, queen_url=queen.url))


@when("the hive's health is checked")
def _health(data_ctx: dict[str, Any]) -> None:
    data_ctx["response"] = data_ctx["hive"].http.get("/health")


@when("the hive's capabilities are read")
def _capabilities(data_ctx: dict[str, Any]) -> None:
    resp = data_ctx["hive"].http.get("/v1/capabilities")
    assert resp.status_code == 200, resp.text
    data_ctx["capabilities"] = resp.json()


def _next_version(kind: str) -> str:
    major, minor, patch = (int(p) for p in __version__.split(".")[:3])
    return f"{major}.{minor + 1}.0" if kind == "minor" else f"{major}.{minor}.{patch + 1}"


@when(parsers.parse('hive "{hive_id}" sends its heartbeat as the next {kind} release'))
def _send_versioned(data_ctx: dict[str, Any], queen: QueenProcess, hive_id: str, kind: str) -> None:
    data_ctx["hive_version"] = _next_version(kind)
    beat = heartbeat(hive_id, [], version=data_ctx["hive_version"])
    data_ctx["response"] = queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"))


@then(
    parsers.parse(
        'the hive answers "{status}" as service "{service}" with id "{hive_id}", the version of this release '
        'and API "{api}"'
    )
)
def _healthy(data_ctx: dict[str, Any], status: str, service: str, hive_id: str, api: str) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": status, "service": service, "version": __version__, "api_version": api,
                           "id": hive_id}  # fmt: skip
    assert api == API_VERSION


@then(parsers.parse('the queen refuses it with 409 "{code}" naming both versions'))
def _refused_version(data_ctx: dict[str, Any], code: str) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert data_ctx["hive_version"] in error["message"] and __version__ in error["message"]
    assert error["details"]["hive_version"] == data_ctx["hive_version"]
    assert error["details"]["queen_version"] == __version__


@then("the message says which side to upgrade")
def _upgrade_hint(data_ctx: dict[str, Any]) -> None:
    error = data_ctx["response"].json()["error"]
    assert error["details"]["upgrade"] == "queen"  # the hive is newer
    assert f"Upgrade the queen to rbee {data_ctx['hive_version']}" in error["message"]


@then(parsers.parse('the queen does not list hive "{hive_id}"'))
def _not_listed(queen: QueenProcess, hive_id: str) -> None:
    assert hive_id not in [h["hive_id"] for h in queen.http.get("/v1/hives").json()["hives"]]


@then(parsers.parse('the queen takes the heartbeat and lists hive "{hive_id}" as "{status}"'))
def _taken(data_ctx: dict[str, Any], queen: QueenProcess, hive_id: str, status: str) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == 200, resp.text
    hives = {h["hive_id"]: h for h in queen.http.get("/v1/hives").json()["hives"]}
    assert hives[hive_id]["status"] == status and hives[hive_id]["version"] == data_ctx["hive_version"]


@then(parsers.parse('the queen lists hive "{hive_id}" as "{status}" with the version of this release'))
def _real_hive_listed(queen: QueenProcess, hive_id: str, status: str) -> None:
    def listed() -> dict[str, Any] | None:
        return next((h for h in queen.http.get("/v1/hives").json()["hives"] if h["hive_id"] == hive_id), None)

    hive = wait_for(listed, timeout=10, what=f"hive {hive_id} at the queen")
    assert hive["status"] == status and hive["version"] == __version__


@then(parsers.parse('the hive offers the "{backend}" backend'))
def _offers(data_ctx: dict[str, Any], backend: str) -> None:
    assert backend in data_ctx["capabilities"]["backends"]
    assert data_ctx["capabilities"]["backends"][0] == "cpu"


@then(parsers.parse('the hive offers "{backend}" exactly when it detects NVIDIA GPUs'))
def _offers_cuda(data_ctx: dict[str, Any], backend: str) -> None:
    caps = data_ctx["capabilities"]
    gpus = caps["resources"]["gpus"]
    assert (backend in caps["backends"]) == bool(gpus)
    assert caps["backends"] == detect_backends(detect_gpus()), "the same answer as detecting here"


@then("the hive reports the RAM, disk and CPU count of this machine")
def _resources(data_ctx: dict[str, Any]) -> None:
    res = data_ctx["capabilities"]["resources"]
    assert res["ram_total_bytes"] == psutil.virtual_memory().total
    assert 0 < res["ram_available_bytes"] <= res["ram_total_bytes"]
    disk = psutil.disk_usage(str(data_ctx["hive"].config["data_dir"]))
    assert res["disk_total_bytes"] == disk.total
    assert abs(res["disk_available_bytes"] - disk.free) < GIB
    assert res["cpu_count"] == os.cpu_count()


@then(parsers.parse("the hive's free RAM is enough for a worker of a {size} model"))
def _enough_ram(data_ctx: dict[str, Any], size: str) -> None:
    res = data_ctx["capabilities"]["resources"]
    reserve = int(data_ctx["hive"].config["ram_reserve_bytes"])
    check_ram("preflight", parse_size(size), reserve, available_bytes=res["ram_available_bytes"])
