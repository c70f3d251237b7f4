"""Steps of the SSH preflight (real test hosts, ``rbee.deploy.probe``) and the hive preflight (real hive and
queen processes)."""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from pytest_bdd import given, parsers, then, when

from features.steps.data_fixtures import GIB, Hives, QueenProcess, heartbeat, parse_size, wait_for
from rbee.deploy.probe import PROBE_SCRIPT, HostFacts, Requirements, judge, parse_probe
from rbee.testhosts import TestHosts
from rbee_runtime import API_VERSION, __version__
from rbee_runtime.hive.resources import check_ram, detect_backends, detect_gpus

CONNECT_TIMEOUT_S = 3


@dataclass
class SshPreflight:
    """What the SSH preflight found out about one host."""

    host: str
    reachable: bool
    authenticated: bool
    facts: HostFacts | None = None
    error: str = ""
    hint: str = ""
    elapsed_ms: float = 0.0
    problems: list[str] = field(default_factory=list)


def ssh_command(address: str, key: Path, remote: list[str]) -> list[str]:
    """``ssh`` to ``root@address`` with exactly ``key`` (no agent, no config file, host keys not stored)."""
    return [
        "ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", f"root@{address}", *remote,
    ]  # fmt: skip


def ssh_preflight(address: str, name: str, key: Path) -> SshPreflight:
    """Run the deploy's probe script on the host over SSH and classify what went wrong, if anything."""
    start = time.perf_counter()
    result = subprocess.run(
        ssh_command(address, key, ["sh", "-s"]),
        input=f"RBEE_PREFIX=/opt/rbee; export RBEE_PREFIX\n{PROBE_SCRIPT}",
        capture_output=True,
        text=True,
        timeout=CONNECT_TIMEOUT_S + 20,
        check=False,
    )
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode == 0:
        return SshPreflight(name, True, True, parse_probe(result.stdout), elapsed_ms=elapsed)
    error = result.stderr.strip()
    if "Permission denied" in error:
        return SshPreflight(
            name, True, False, error=error, elapsed_ms=elapsed,
            hint=f"{name} refuses the key {key}: put its public key in ~root/.ssh/authorized_keys there "
            f"(ssh-copy-id -i {key}.pub root@{address}), or set ssh.key to the key it knows (chmod 600 it)",
        )  # fmt: skip
    return SshPreflight(
        name, False, False, error=error, elapsed_ms=elapsed,
        hint=f"cannot connect to {address}:22: check that {name} is up and on the network (ping {address}) "
        "and that sshd runs there",
    )  # fmt: skip


def ssh_round_trips(address: str, key: Path, count: int) -> list[float]:
    """Milliseconds of ``count`` line echoes through one SSH session (``cat`` on the host), after a warm-up."""
    proc = subprocess.Popen(
        ssh_command(address, key, ["cat"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    fd = proc.stdout.fileno()

    def echo(line: bytes, timeout: float) -> float:
        assert proc.stdin is not None
        start = time.perf_counter()
        proc.stdin.write(line)
        proc.stdin.flush()
        got = b""
        while not got.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, timeout - (time.perf_counter() - start)))
            assert ready, f"no echo within {timeout} s"
            chunk = os.read(fd, 4096)
            assert chunk, f"ssh ended: {proc.stderr.read().decode() if proc.stderr else ''}"
            got += chunk
        assert got == line
        return (time.perf_counter() - start) * 1000

    try:
        echo(b"warm-up\n", timeout=CONNECT_TIMEOUT_S + 10)  # connection, key exchange, session
        return [echo(f"ping {i}\n".encode(), timeout=5) for i in range(count)]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


@when(parsers.parse('the SSH preflight probes "{name}" with the deploy key'))
def _probe(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    data_ctx["preflight"] = ssh_preflight(hosts.address(name), name, hosts.paths.key)


@when(parsers.parse('the SSH preflight probes "{name}" with a key the host does not know'))
def _probe_wrong_key(data_ctx: dict[str, Any], hosts: TestHosts, tmp_path: Path, name: str) -> None:
    key = tmp_path / "stranger_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", str(key)], check=True)
    assert key.read_bytes() != hosts.paths.key.read_bytes()
    data_ctx["preflight"] = ssh_preflight(hosts.address(name), name, key)
    data_ctx["wrong_key"] = key


@when(parsers.parse('the SSH round-trip latency to "{name}" is measured {count:d} times over one connection'))
def _latency(data_ctx: dict[str, Any], hosts: TestHosts, name: str, count: int) -> None:
    data_ctx["latencies"] = ssh_round_trips(hosts.address(name), hosts.paths.key, count)
    assert len(data_ctx["latencies"]) == count


def _preflight(data_ctx: dict[str, Any]) -> SshPreflight:
    found: SshPreflight = data_ctx["preflight"]
    return found


@then(parsers.parse('"{name}" is reachable and accepts the key'))
def _reachable(data_ctx: dict[str, Any], name: str) -> None:
    found = _preflight(data_ctx)
    assert found.host == name and found.reachable and found.authenticated, found.error
    assert found.facts is not None and found.facts.complete, "the probe ran to its end"


@then("the probe reports Linux with Python 3.11 or newer, the venv module and systemd")
def _probe_facts(data_ctx: dict[str, Any]) -> None:
    facts = _preflight(data_ctx).facts
    assert facts is not None
    assert facts.os == "Linux" and facts.arch and facts.kernel
    assert facts.python is not None and facts.python[:2] >= (3, 11), facts.python_text
    assert facts.python_venv and facts.systemd
    assert facts.gpus == []


@then(parsers.parse('the probe reports the RAM and free disk of "{name}"'))
def _probe_resources(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    facts = _preflight(data_ctx).facts
    assert facts is not None
    meminfo = hosts.ssh(name, "awk '/^MemTotal:/{print $2}' /proc/meminfo", check=True).stdout
    assert facts.ram_total_bytes == int(meminfo) * 1024
    assert 0 < facts.ram_available_bytes <= facts.ram_total_bytes
    assert facts.disk_free_bytes > 0


@then(parsers.parse('"{name}" has no problem for a cpu deployment needing {ram} of RAM and {disk} of disk'))
def _fit(data_ctx: dict[str, Any], name: str, ram: str, disk: str) -> None:
    facts = _preflight(data_ctx).facts
    assert facts is not None
    needs = Requirements(backend="cpu", gpus=[], min_ram_bytes=parse_size(ram), min_disk_bytes=parse_size(disk))
    assert judge(facts, needs) == []
    assert facts.backend_for("auto") == "cpu"


@then(parsers.parse('"{name}" is not fit for a cpu deployment needing {ram} of RAM, because of its RAM'))
def _not_fit_ram(data_ctx: dict[str, Any], name: str, ram: str) -> None:
    facts = _preflight(data_ctx).facts
    assert facts is not None
    problems = judge(facts, Requirements(backend="cpu", gpus=[], min_ram_bytes=parse_size(ram), min_disk_bytes=0))
    assert len(problems) == 1 and problems[0].startswith("RAM "), problems
    assert f"{facts.ram_total_bytes / GIB:.1f} GiB" in problems[0]


@then(parsers.parse('"{name}" is not fit for a cuda deployment, because nvidia-smi lists no GPU'))
def _not_fit_cuda(data_ctx: dict[str, Any], name: str) -> None:
    facts = _preflight(data_ctx).facts
    assert facts is not None
    problems = judge(facts, Requirements(backend="cuda", gpus="all", min_ram_bytes=0, min_disk_bytes=0))
    assert problems == ["backend cuda, but nvidia-smi lists no GPU (driver missing?); use backend: cpu explicitly"], (
        problems
    )


@then(parsers.parse("every round trip took less than {limit:d} ms"))
def _latency_ok(data_ctx: dict[str, Any], limit: int) -> None:
    latencies: list[float] = data_ctx["latencies"]
    assert all(0 < ms < limit for ms in latencies), latencies
    print(f"SSH preflight: latency {statistics.median(latencies):.1f} ms (OK)")


@then(parsers.parse('"{name}" is reported unreachable with the hint to check that it is up and on the network'))
def _unreachable(data_ctx: dict[str, Any], hosts: TestHosts, name: str) -> None:
    found = _preflight(data_ctx)
    assert not found.reachable and not found.authenticated and found.facts is None
    assert "Connection refused" in found.error or "No route to host" in found.error or "timed out" in found.error
    assert f"check that {name} is up and on the network (ping {hosts.address(name)})" in found.hint
    assert found.elapsed_ms < (CONNECT_TIMEOUT_S + 5) * 1000


@then(parsers.parse('"{name}" is reported as an authentication failure with a hint about the key'))
def _auth_failure(data_ctx: dict[str, Any], name: str) -> None:
    found = _preflight(data_ctx)
    assert found.reachable and not found.authenticated and found.facts is None
    assert "Permission denied (publickey" in found.error
    assert str(data_ctx["wrong_key"]) in found.hint and "authorized_keys" in found.hint


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
