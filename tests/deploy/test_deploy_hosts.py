"""The deploy suite end to end on three real hosts (systemd-nspawn, real SSH, real systemd).

h1 runs the queen and a hive; h2 and h3 run hives with one placed worker each. The tests run
in order on the same hosts: first deploy, no-op re-run, testinfra state, dry run, interrupted
deploy, a host that is down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from rbee.testhosts.paths import Paths

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
API_KEY = "sk-deploy-test"
QUEEN = "http://10.210.0.11:7833"
HOSTS = ["h1", "h2", "h3"]


@dataclass
class Cluster:
    """The spec file the tests deploy, and the hosts it targets."""

    hosts: TestHosts
    spec: Path
    model: Path

    def write(self, slots: int = 2) -> None:
        self.spec.write_text(
            spec_for_hosts(
                HOSTS,
                cluster="deploytest",
                queen_host="h1",
                models_yaml=f"- {{id: tiny, source: 'file://{self.model}', context: 512}}",
                placements_yaml=f"- {{model: tiny, hosts: [h2, h3], replicas: 2, slots: {slots}}}",
                extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
                "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}",
            )
        )


def deploy(cluster: Cluster, *args: str, timeout: float = 600, yes: bool = True) -> subprocess.CompletedProcess[str]:
    """``pyinfra -y --json inventory/inventory.py deploys/site.py``, as an operator runs it (no -y: plan only)."""
    env = {**os.environ, "RBEE_SPEC": str(cluster.spec), "RBEE_TEST_KEYS": API_KEY}
    command = [PYINFRA, *(["-y"] if yes else []), "--json", *args, "inventory/inventory.py", "deploys/site.py"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def results(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.stdout)
    return data


def main_pids(cluster: Cluster) -> dict[str, str]:
    units = {"h1": ["rbee-queen", "rbee-hive"], "h2": ["rbee-hive", "rbee-worker@tiny-1"], "h3": ["rbee-hive"]}
    pids = {}
    for host, names in units.items():
        for name in names:
            out = cluster.hosts.ssh(host, f"systemctl show -p MainPID --value {name}").stdout.strip()
            pids[f"{host}/{name}"] = out
    return pids


def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{QUEEN}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def queen_workers() -> list[dict[str, Any]]:
    response = httpx.get(f"{QUEEN}/v1/workers", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    workers: list[dict[str, Any]] = response.json()["workers"]
    return workers


@pytest.fixture(scope="module")
def cluster(
    test_hosts: TestHosts, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("deploy")
    made = Cluster(test_hosts, folder / "cluster.yaml", tiny_model_path)
    made.write()
    yield made


@pytest.fixture(scope="module")
def first(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    return deploy(cluster)


def test_first_deploy_converges_and_serves_from_another_host(first: subprocess.CompletedProcess[str]) -> None:
    assert first.returncode == 0, first.stderr[-4000:]
    assert "rbee preflight (3/3 hosts answered)" in first.stderr
    assert "rbee cluster at" in first.stderr
    assert results(first)["results"]["totals"]["success"] > 0
    workers = queen_workers()
    assert sorted(w["hive_id"] for w in workers) == ["h2", "h3"], workers
    assert all(w["managed_by"] == "external" and w["state"] == "idle" for w in workers)
    chat = client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert chat.choices[0].message.content


def test_second_run_changes_nothing(cluster: Cluster, first: subprocess.CompletedProcess[str]) -> None:
    before = main_pids(cluster)
    again = deploy(cluster)
    assert again.returncode == 0, again.stderr[-4000:]
    totals = results(again)["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0, [
        op["names"] for op in results(again)["results"]["operations"] if op["success"]
    ]
    assert main_pids(cluster) == before, "a service was restarted by a no-op deploy"


def test_host_state_with_testinfra(cluster: Cluster, first: subprocess.CompletedProcess[str]) -> None:
    paths = Paths.default()
    hosts = ",".join(f"paramiko://root@10.210.0.{10 + i}" for i in (1, 2, 3))
    env = {
        **os.environ, "RBEE_TESTINFRA": "1", "RBEE_QUEEN_HOST": "h1", "RBEE_PLACED": "h2:tiny-1,h3:tiny-1",
        "RBEE_SPEC_FILE": str(cluster.spec), "RBEE_TEST_KEYS": API_KEY,
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/host_state",
         f"--hosts={hosts}", f"--ssh-config={paths.ssh_config}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]
    assert " passed" in run.stdout


def rbee(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_TEST_KEYS": API_KEY}
    command = [str(Path(sys.executable).parent / "rbee"), *args, str(cluster.spec)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_plan_is_empty_then_reports_drift_and_placement_changes(
    cluster: Cluster, first: subprocess.CompletedProcess[str]
) -> None:
    clean = rbee(cluster, "plan")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "h1: up to date" in clean.stdout and "h3: up to date" in clean.stdout
    cluster.hosts.ssh("h3", "sed -i 's/^RestartSec=2/RestartSec=9/' /etc/systemd/system/rbee-hive.service")
    drift = rbee(cluster, "plan")
    assert drift.returncode == 3, drift.stdout + drift.stderr
    h3 = drift.stdout.split("h3: ", 1)[1]
    assert "~ services: unit rbee-hive.service" in h3 and "~ services: reload systemd units that changed" in h3
    assert "h2: up to date" in drift.stdout
    cluster.write(slots=3)
    try:
        placed = rbee(cluster, "plan", "--json")
        assert placed.returncode == 3
        changes = json.loads(placed.stdout)["changes"]
        assert "services: worker tiny-1 config" in changes["h2"]
        assert changes["h1"] == ["record: release.json"]  # only the record of the spec hash
    finally:
        cluster.write()
    assert deploy(cluster).returncode == 0  # puts the hand-edited unit back


def test_status_shows_what_each_host_runs(cluster: Cluster, first: subprocess.CompletedProcess[str]) -> None:
    shown = rbee(cluster, "status")
    assert shown.returncode == 0, shown.stderr
    for host in HOSTS:
        assert f"{host}: this spec, commit " in shown.stdout
    assert "model tiny: sha256 " in shown.stdout


def test_dry_run_shows_changes_and_changes_nothing(cluster: Cluster, first: subprocess.CompletedProcess[str]) -> None:
    env_before = cluster.hosts.ssh("h2", "cat /etc/rbee/workers/tiny-1.env").stdout
    cluster.write(slots=3)
    dry = deploy(cluster, "--dry", yes=False)
    assert dry.returncode == 0, dry.stderr[-4000:]
    changing = [op["names"] for op in results(dry)["plan"] if op["hosts_with_change"]]
    assert any("worker tiny-1 config" in " ".join(names) for names in changing), changing
    assert cluster.hosts.ssh("h2", "cat /etc/rbee/workers/tiny-1.env").stdout == env_before


def test_interrupted_deploy_is_resumed(cluster: Cluster, first: subprocess.CompletedProcess[str]) -> None:
    cluster.write(slots=3)
    env = {**os.environ, "RBEE_SPEC": str(cluster.spec), "RBEE_TEST_KEYS": API_KEY}
    process = subprocess.Popen(
        [PYINFRA, "-y", "inventory/inventory.py", "deploys/site.py"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:  # kill it once it is changing the hosts
        if "Beginning operation run" in line or "Starting operation" in line:
            time.sleep(1.0)
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    resumed = deploy(cluster)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    deadline = time.monotonic() + 30  # the restarted workers re-announce within a heartbeat or two
    while (slots := {w["hive_id"]: w["slots_total"] for w in queen_workers()}) != {"h2": 3, "h3": 3}:
        assert time.monotonic() < deadline, slots
        time.sleep(0.5)
    settled = deploy(cluster)
    assert results(settled)["results"]["totals"]["success"] == 0


def test_a_host_that_is_down_is_named_and_the_others_deploy(
    cluster: Cluster, first: subprocess.CompletedProcess[str]
) -> None:
    cluster.hosts.kill("h3")
    try:
        cluster.write(slots=2)
        partial = deploy(cluster, timeout=300)
        assert partial.returncode != 0
        assert "h3" in partial.stderr and "Could not connect" in partial.stderr
        assert "rbee preflight (2/3 hosts answered)" in partial.stderr
        assert "unreachable: see the connection error above" in partial.stderr
        assert "--slots 2 " in cluster.hosts.ssh("h2", "cat /etc/rbee/workers/tiny-1.env").stdout
    finally:
        cluster.hosts.start("h3")
    healed = deploy(cluster)
    assert healed.returncode == 0, healed.stderr[-4000:]
