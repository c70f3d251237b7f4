"""The deploy suite end to end on three real hosts of two releases (systemd-nspawn, real SSH, real systemd).

h1 (Debian 12, Python 3.11, the control machine's feature set) runs the queen and a hive and gets
the engine built here; h2 and h3 (Debian 13, Python 3.13) run hives with one placed worker each
and get an engine built once on h2 through the builder path. The tests run in order on the same
hosts: first deploy, no-op re-run, testinfra state, dry run, interrupted deploy, a host that is
down, an engine build that fails on its builder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
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

from rbee.deploys.count_commands import per_host, read_log
from rbee.engine.wheelcache import DEFAULT_CACHE, builds
from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from rbee.testhosts.paths import Paths
from tests.hosts.plugin import session_layout
from tests.prometheus import sample_value

FIRST_DEPLOY_TIMEOUT = 2400  # the trixie engine is built on h2 when it is not cached (~10 min on 2 cores)
pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(FIRST_DEPLOY_TIMEOUT + 300)]  # a bare machine

ROOT = Path(__file__).parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
API_KEY = "sk-deploy-test"
QUEEN = "http://10.210.0.11:7833"
HOSTS = ["h1", "h2", "h3"]
RELEASES = ("bookworm", "trixie")  # h1 bookworm, h2 and h3 trixie


@dataclass
class Cluster:
    """The spec file the tests deploy, and the hosts it targets."""

    hosts: TestHosts
    spec: Path
    model: Path

    def write(self, slots: int = 2, deploy_yaml: str = "") -> None:
        self.spec.write_text(
            spec_for_hosts(
                HOSTS,
                cluster="deploytest",
                queen_host="h1",
                models_yaml=f"- {{id: tiny, source: 'file://{self.model}', context: 512}}",
                placements_yaml=f"- {{model: tiny, hosts: [h2, h3], replicas: 2, slots: {slots}}}",
                extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
                "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}\n"
                + (f"deploy: {deploy_yaml}" if deploy_yaml else ""),
            )
        )


def deploy(
    cluster: Cluster, *args: str, timeout: float = 600, yes: bool = True, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``pyinfra -y --json inventory/inventory.py deploys/site.py``, as an operator runs it (no -y: plan only).

    ``log``: run it through ``rbee.deploys.count_commands``, which logs every remote command and transfer there.
    """
    env = {**os.environ, "RBEE_SPEC": str(cluster.spec), "RBEE_TEST_KEYS": API_KEY}
    pyinfra = [sys.executable, "-m", "rbee.deploys.count_commands", str(log)] if log else [PYINFRA]
    command = [*pyinfra, *(["-y"] if yes else []), "--json", *args, "inventory/inventory.py", "deploys/site.py"]
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


def generations(cluster: Cluster) -> dict[str, float]:
    """Hive id → the generations its placed worker has started (``/metrics``, asked with the workers' credential)."""
    counted = {}
    for worker in queen_workers():
        token = cluster.hosts.ssh(worker["hive_id"], "cat /etc/rbee/credentials/worker.credential").stdout.strip()
        text = httpx.get(f"{worker['url']}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10).text
        counted[worker["hive_id"]] = sample_value(text, "rbee_worker_requests_started_total")
    return counted


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
    session_count, session_releases = session_layout()
    test_hosts.up(3, releases=RELEASES)
    made = Cluster(test_hosts, folder / "cluster.yaml", tiny_model_path)
    made.write()
    try:
        yield made
    finally:
        test_hosts.up(session_count, releases=session_releases)  # h2, h3 back to the session's release


def engine_keys(cluster: Cluster) -> dict[str, str]:
    """The engine feature set each host has installed (its stamp)."""
    return {h: cluster.hosts.ssh(h, "cat /opt/rbee/stamps/engine").stdout.strip() for h in HOSTS}


@dataclass
class FirstDeploy:
    run: subprocess.CompletedProcess[str]
    cached_before: set[str]
    builds: list[dict[str, Any]]


@pytest.fixture(scope="module")
def first_deploy(cluster: Cluster) -> FirstDeploy:
    cached_before = {p.name for p in DEFAULT_CACHE.expanduser().iterdir() if p.is_dir()}
    ledger = len(builds())
    run = deploy(cluster, timeout=FIRST_DEPLOY_TIMEOUT)
    return FirstDeploy(run, cached_before, builds()[ledger:])


@pytest.fixture(scope="module")
def first(first_deploy: FirstDeploy) -> subprocess.CompletedProcess[str]:
    return first_deploy.run


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


def test_each_feature_set_is_built_once_and_shared(cluster: Cluster, first_deploy: FirstDeploy) -> None:
    keys = engine_keys(cluster)
    assert keys["h2"] == keys["h3"] != keys["h1"], keys
    assert "-py3.11-" in keys["h1"] and "glibc2.36" in keys["h1"]
    assert "-py3.13-" in keys["h2"] and "glibc2.41" in keys["h2"]
    built = [b["key"] for b in first_deploy.builds]
    assert len(built) == len(set(built)), f"a feature set was built twice: {built}"
    for key, builder in ((keys["h1"], "control"), (keys["h2"], "h2")):
        if key in first_deploy.cached_before:
            assert key not in built
        else:  # not cached: built exactly once, where it belongs, with its progress shown
            assert [b["where"] for b in first_deploy.builds if b["key"] == key] == [builder]
    if keys["h2"] not in first_deploy.cached_before:
        assert f"building engine {keys['h2']} on h2" in first_deploy.run.stderr
        assert f"engine {keys['h2']} building on h2: [" in first_deploy.run.stderr  # ninja's [n/N]
    wheel = cluster.hosts.ssh("h3", f"ls /opt/rbee/engines/{keys['h3']}/").stdout.strip()
    assert wheel == "llama_cpp_python-0.3.36-cp313-none-manylinux_2_41_x86_64.whl"


NOOP_COMMANDS_PER_HOST = 1
"""What a no-op deploy sends each host: the preflight's one round trip (probe + state), nothing after it."""


def test_second_run_changes_nothing(cluster: Cluster, first: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """Nothing restarted, so the health gate only lists hives and workers: no worker generates anything."""
    before = main_pids(cluster)
    generated = generations(cluster)
    ledger = len(builds())
    log = tmp_path / "calls.jsonl"
    again = deploy(cluster, log=log)
    assert again.returncode == 0, again.stderr[-4000:]
    calls = read_log(log)
    assert per_host(calls) == dict.fromkeys(HOSTS, NOOP_COMMANDS_PER_HOST), [c["text"][:200] for c in calls]
    assert not [c for c in calls if "sha256sum /opt/rbee/models" in c["text"] or c["kind"] != "command"]
    assert len(builds()) == ledger and "building engine" not in again.stderr
    totals = results(again)["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0, [
        op["names"] for op in results(again)["results"]["operations"] if op["success"]
    ]
    assert main_pids(cluster) == before, "a service was restarted by a no-op deploy"
    assert generations(cluster) == generated, "the no-op's health gate made a worker generate"


def test_a_run_that_restarts_workers_gates_on_each_serving(
    cluster: Cluster, first: subprocess.CompletedProcess[str]
) -> None:
    """Workers restarted (another slot count): the gate had each placed worker stream a completion."""
    cluster.write(slots=3)
    try:
        restarted = deploy(cluster)
        assert restarted.returncode == 0, restarted.stderr[-4000:]
        served = generations(cluster)  # fresh processes: what they generated is the gate's (once per poll)
        assert sorted(served) == ["h2", "h3"] and min(served.values()) >= 1, served
    finally:
        cluster.write()
    assert deploy(cluster).returncode == 0


def test_hand_changes_are_noticed_by_stat_and_put_back(cluster: Cluster, tmp_path: Path) -> None:
    """A model replaced by hand (same size and mtime, other bytes) and a config's mode: found without hashing."""
    model = "/opt/rbee/models/tiny.gguf"
    good = cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0]
    cluster.hosts.ssh(
        "h3",
        f"cp -p {model} /opt/rbee/models/.hand && printf XXXX | dd of=/opt/rbee/models/.hand bs=1 seek=64 "
        f"conv=notrunc 2>/dev/null && touch -r {model} /opt/rbee/models/.hand && mv /opt/rbee/models/.hand {model} "
        "&& chmod 600 /etc/rbee/hive.yaml",
    )
    assert cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0] != good
    log = tmp_path / "calls.jsonl"
    fixed = deploy(cluster, log=log)
    assert fixed.returncode == 0, fixed.stderr[-4000:]
    calls = read_log(log)
    assert per_host(calls)["h1"] == per_host(calls)["h2"] == NOOP_COMMANDS_PER_HOST
    assert next(c["text"] for c in calls if c["host"] == "h3" and c["kind"] == "put").startswith(
        "/opt/rbee/models/.tiny.gguf.rbee-tmp-"
    )
    assert "chmod 640 /etc/rbee/hive.yaml" in [c["text"] for c in calls if c["host"] == "h3"]
    assert cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0] == good
    assert cluster.hosts.ssh("h3", "stat -c %a /etc/rbee/hive.yaml").stdout.strip() == "640"
    again = tmp_path / "again.jsonl"
    assert deploy(cluster, log=again).returncode == 0
    assert per_host(read_log(again)) == dict.fromkeys(HOSTS, NOOP_COMMANDS_PER_HOST)


def test_an_interrupted_model_copy_is_continued(cluster: Cluster, tmp_path: Path) -> None:
    """Half a model's bytes left in its temp file by a cut copy: the next deploy sends only the rest."""
    model = "/opt/rbee/models/tiny.gguf"
    good = cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0]
    size = int(cluster.hosts.ssh("h3", f"stat -c %s {model}").stdout)
    temp = f"/opt/rbee/models/.tiny.gguf.rbee-tmp-{good[:16]}"
    cluster.hosts.ssh(
        "h3", f"head -c {size // 2} {model} > {temp} && rm {model} && touch /opt/rbee/models/.x.rbee-tmp-1"
    )
    log = tmp_path / "calls.jsonl"
    resumed = deploy(cluster, log=log)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    puts = [c["text"] for c in read_log(log) if c["host"] == "h3" and c["kind"] == "put"]
    assert puts == [f"{temp} from byte {size // 2}"], puts  # streamed by ssh: the rest only, appended
    assert cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0] == good
    left = cluster.hosts.ssh("h3", "ls -a /opt/rbee/models").stdout.split()
    assert [name for name in left if ".rbee-tmp-" in name] == []  # the other leftover is gone too
    stamps = cluster.hosts.ssh("h3", "cat /opt/rbee/stamps/upload-*").stdout
    assert f"{model} {good} {size} " in stamps  # stamped by the receiver: the next run knows it by stat


HOLD_LOCK = shlex.quote(
    "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(300)"
)


def test_a_copy_that_fails_on_its_host_names_the_host_and_the_file(cluster: Cluster) -> None:
    """Another process holds the model's temp file on h3 (as a copy still running would): h3 fails saying so."""
    model = "/opt/rbee/models/tiny.gguf"
    good = cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0]
    temp = f"/opt/rbee/models/.tiny.gguf.rbee-tmp-{good[:16]}"
    cluster.hosts.ssh("h3", f"rm {model}")
    holder = cluster.hosts.ssh("h3", f"python3 -c {HOLD_LOCK} {temp} >/dev/null 2>&1 </dev/null & echo $!")
    try:
        failed = deploy(cluster)
        assert failed.returncode != 0
        said = f"[h3] rbee: copy of {Path.home()}/.cache/rbee/models/tiny.gguf to h3:{model} failed: another copy"
        assert f"{said} into {temp} is still running (ssh exit 1)" in failed.stderr, failed.stderr[-4000:]
    finally:
        cluster.hosts.ssh("h3", f"kill {int(holder.stdout)}; rm -f {temp}")
    healed = deploy(cluster)
    assert healed.returncode == 0, healed.stderr[-4000:]
    assert cluster.hosts.ssh("h3", f"sha256sum {model}").stdout.split()[0] == good


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
    assert "rbee plan: nothing to do" in clean.stdout and clean.stdout.count("up to date") == 3
    cluster.hosts.ssh("h3", "sed -i 's/^RestartSec=2/RestartSec=9/' /etc/systemd/system/rbee-hive.service")
    drift = rbee(cluster, "plan")
    assert drift.returncode == 3, drift.stdout + drift.stderr
    h3 = drift.stdout.split("\nh3: ", 1)[1]
    assert "~ unit rbee-hive.service (/etc/systemd/system/rbee-hive.service): update" in h3
    assert "    -RestartSec=9\n    +RestartSec=2\n" in h3 and "~ systemd: reload the units" in h3
    assert "\nh2: " not in drift.stdout  # up to date: in the table only
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
        assert f"{host}: this spec, engine {engine_keys(cluster)[host]}" in shown.stdout
    assert shown.stdout.count("  made from spec commit ") == 3 and "model tiny: sha256 " in shown.stdout


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


def test_a_failing_engine_build_names_its_builder_with_the_log_tail_and_the_others_deploy(
    cluster: Cluster, first: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    """h3, the builder named in the spec, has a compiler that fails; a fresh build cache holds only h1's engine, and
    h2 and h3 must install theirs again (their install stamps gone: a host that has its engine keeps it)."""
    keys = engine_keys(cluster)
    for host in ("h2", "h3"):
        cluster.hosts.ssh(host, "rm -f /opt/rbee/stamps/engine", check=True)
    cache = tmp_path / "wheels"
    cache.mkdir()
    subprocess.run(["cp", "-a", str(DEFAULT_CACHE.expanduser() / keys["h1"]), str(cache)], check=True)
    # the real compilers behind c++/cc answer with an error (command -v still finds them: the build runs)
    script = "printf '#!/bin/sh\\necho rbee-test: this compiler is broken >&2\\nexit 1\\n'"
    cluster.hosts.ssh(
        "h3",
        "for c in c++ cc; do real=$(readlink -f /usr/bin/$c); mv $real $real.rbee-test; "
        f"{script} > $real; chmod +x $real; done",
    )
    try:
        cluster.write(slots=3, deploy_yaml=f"{{build_cache: '{cache}', builders: [h3]}}")
        failed = deploy(cluster, timeout=900)
        assert failed.returncode != 0, failed.stderr[-6000:]
        assert f"building engine {keys['h2']} on h3" in failed.stderr
        assert "engine build on h3 failed" in failed.stderr
        assert "rbee-test: this compiler is broken" in failed.stderr  # the tail of h3's build log
        record = json.loads(cluster.hosts.ssh("h1", "cat /opt/rbee/release.json").stdout)
        assert record["spec_sha256"] == hashlib.sha256(cluster.spec.read_bytes()).hexdigest(), "h1 deployed to the end"
        assert "--slots 3 " not in cluster.hosts.ssh("h2", "cat /etc/rbee/workers/tiny-1.env").stdout
        assert engine_keys(cluster)["h1"] == keys["h1"]
        assert list((cache).iterdir()) == [cache / keys["h1"]], "a failed build leaves nothing in the cache"
    finally:
        cluster.hosts.ssh("h3", "for c in /usr/bin/*.rbee-test; do mv $c ${c%.rbee-test}; done")
        cluster.write()
    healed = deploy(cluster)
    assert healed.returncode == 0, healed.stderr[-4000:]
