"""The units on real hosts mean ready (``Type=notify``): a deployed worker is active with a status line, a
restarted worker serves when ``systemctl`` returns, and a worker whose model cannot load fails its start, its
reason in the journal under its ``SyslogIdentifier``.

The same cluster as tests/deploy/test_rollout_hosts.py (h1: queen + hive, h2/h3: a placed ``tiny`` worker each),
so its deploy is a no-op when those ran before on the session's hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
API_KEY = "sk-deploy-test"
WORKERS = "/etc/rbee/workers"
MODELS = "/opt/rbee/models"
#: The start timeout the broken instances get (a drop-in): their start must fail well within it.
SHORT_START_S = 40


def write_spec(path: Path, model: Path, slots: int = 2) -> None:
    path.write_text(spec_for_hosts(
        ["h1", "h2", "h3"], cluster="deploytest", queen_host="h1",
        models_yaml=f"- {{id: tiny, source: 'file://{model}', context: 512}}",
        placements_yaml=f"- {{model: tiny, hosts: [h2, h3], replicas: 2, slots: {slots}}}",
        extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
        "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}",
    ))  # fmt: skip


def deploy(spec: Path) -> None:
    """``rbee deploy`` of ``spec``, which must succeed."""
    env = {**os.environ, "RBEE_TEST_KEYS": API_KEY}
    rbee = str(Path(sys.executable).parent / "rbee")
    run = subprocess.run([rbee, "deploy", str(spec)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.fixture(scope="module")
def hosts(test_hosts: TestHosts, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> TestHosts:
    spec = tmp_path_factory.mktemp("units") / "cluster.yaml"
    write_spec(spec, tiny_model_path)
    deploy(spec)
    return test_hosts


def show(hosts: TestHosts, host: str, unit: str, *properties: str) -> dict[str, str]:
    out = hosts.ssh(host, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties), check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def status_of(hosts: TestHosts, host: str, unit: str, starts: str, timeout_s: float = 15.0) -> dict[str, str]:
    """``systemctl show`` of ``unit`` once its status line starts with ``starts`` (looked at every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = show(hosts, host, unit, "ActiveState", "StatusText", "Type", "NotifyAccess", "SyslogIdentifier",
                     "WatchdogUSec")  # fmt: skip
        if shown["StatusText"].startswith(starts) or time.monotonic() > deadline:
            return shown
        time.sleep(1)


def test_deployed_services_are_active_notify_units_with_a_status_line(hosts: TestHosts) -> None:
    worker = status_of(hosts, "h2", "rbee-worker@tiny-1", "serving tiny at ")
    assert worker["ActiveState"] == "active", worker
    assert worker["StatusText"].startswith("serving tiny at https://10.210.0.12:7840 (2 slot(s))") or worker[
        "StatusText"].startswith("serving tiny at http://10.210.0.12:7840 (2 slot(s))"), worker  # fmt: skip
    assert (worker["Type"], worker["NotifyAccess"], worker["WatchdogUSec"]) == ("notify", "main", "1min"), worker
    assert worker["SyslogIdentifier"] == "rbee-worker@tiny-1"  # %i resolved
    hive = status_of(hosts, "h2", "rbee-hive", "listening on ")
    assert hive["ActiveState"] == "active" and hive["SyslogIdentifier"] == "rbee-hive", hive
    assert hive["StatusText"].endswith("; heartbeats reach the queen") and "1 worker(s) ready" in hive["StatusText"]
    queen = status_of(hosts, "h1", "rbee-queen", "listening on ", timeout_s=0)
    assert queen["ActiveState"] == "active" and queen["SyslogIdentifier"] == "rbee-queen", queen
    assert "hive(s) online" in queen["StatusText"] or "no hive online" in queen["StatusText"], queen


def test_a_restarted_worker_serves_when_systemctl_returns(hosts: TestHosts) -> None:
    token = hosts.ssh("h2", "cat /etc/rbee/credentials/worker.credential", check=True).stdout.strip()
    scheme = "https" if "https" in show(hosts, "h2", "rbee-worker@tiny-1", "StatusText")["StatusText"] else "http"
    began = time.monotonic()
    hosts.ssh("h2", "systemctl restart rbee-worker@tiny-1", check=True, timeout=120)
    took = time.monotonic() - began
    health = httpx.get(f"{scheme}://10.210.0.12:7840/health", headers={"Authorization": f"Bearer {token}"},
                       timeout=5, verify=False).json()  # fmt: skip
    assert health["state"] == "idle", health  # systemd waited for READY: loaded and answering
    print(f"systemctl restart rbee-worker@tiny-1 returned after {took:.2f} s, the worker idle")


@pytest.fixture
def broken_instance(hosts: TestHosts) -> Iterator[str]:
    """A worker instance ``broken-1`` on h2 (its env file made from tiny-1's, port 7849), a short start timeout; all
    of it removed afterwards."""
    unit, dropin = "rbee-worker@broken-1", "/run/systemd/system/rbee-worker@broken-1.service.d"
    try:
        yield "broken-1"
    finally:
        hosts.ssh("h2", f"systemctl stop {unit}; systemctl reset-failed {unit}; rm -rf {dropin} "
                        f"{WORKERS}/broken-1.env {MODELS}/broken.gguf; systemctl daemon-reload")  # fmt: skip


@pytest.mark.parametrize("broken", ["truncated model, json logs", "missing model"])
def test_a_worker_whose_model_cannot_load_fails_its_start_with_the_reason_in_the_journal(
    hosts: TestHosts, broken_instance: str, broken: str
) -> None:
    model = f"{MODELS}/broken.gguf" if broken.startswith("truncated") else f"{MODELS}/missing.gguf"
    env = "Environment=RBEE_LOG_FORMAT=json\\n" if "json" in broken else ""
    dropin = f"/run/systemd/system/rbee-worker@{broken_instance}.service.d"
    hosts.ssh("h2", " && ".join([
        f"cp -p {MODELS}/tiny.gguf {MODELS}/broken.gguf && truncate -s 4096 {MODELS}/broken.gguf",
        f"sed -e 's/--worker-id [^ ]*/--worker-id h2-{broken_instance}/' -e 's#{MODELS}/tiny.gguf#{model}#' "
        f"-e 's/--port 7840/--port 7849/' {WORKERS}/tiny-1.env > {WORKERS}/{broken_instance}.env",
        f"mkdir -p {dropin}",
        f"printf '[Service]\\nTimeoutStartSec={SHORT_START_S}\\n{env}' > {dropin}/short.conf",
        "systemctl daemon-reload",
    ]), check=True)  # fmt: skip
    unit = f"rbee-worker@{broken_instance}"
    since = hosts.ssh("h2", "date +%s", check=True).stdout.strip()
    began = time.monotonic()
    started = hosts.ssh("h2", f"systemctl start {unit}", timeout=SHORT_START_S + 30)
    took = time.monotonic() - began
    assert started.returncode != 0 and took < SHORT_START_S, (started.returncode, took, started.stderr)
    assert show(hosts, "h2", unit, "Result")["Result"] == "exit-code"
    journal = hosts.ssh("h2", f"journalctl -u {unit} -t {unit} --since @{since} -o cat --no-pager", check=True).stdout
    reason = [line for line in journal.splitlines() if "load failed [" in line]
    assert reason and model in reason[0], journal[-3000:]
    if "json" in broken:  # journalctl -t rbee-worker@... -o cat | jq: every line of the worker one object
        lines = [json.loads(line) for line in journal.splitlines() if line.strip()]
        mine = ("worker", f"h2-{broken_instance}")
        strays = [line for line in lines if (line["service"], line.get("worker")) != mine]
        assert lines and not strays, strays
    print(f"{broken}: systemctl start failed after {took:.2f} s: {started.stderr.strip()}")


def test_a_deploy_restarts_a_worker_that_hit_its_start_limit(
    hosts: TestHosts, tiny_model_path: Path, tmp_path: Path
) -> None:
    """``StartLimitBurst=`` counts manual starts: after a few restarts in minutes systemd refuses the next one. A
    deploy's own (re)start clears the count first (``systemctl reset-failed``), so deploys and rollbacks in a row are
    never refused; the limit still stops a unit that crash-loops afterwards."""
    unit = "rbee-worker@tiny-1"
    burst = int(show(hosts, "h2", unit, "StartLimitBurst")["StartLimitBurst"])
    refused = hosts.ssh("h2", f"for i in $(seq {burst + 1}); do systemctl restart {unit} || exit 7; done", timeout=300)
    assert refused.returncode == 7 and show(hosts, "h2", unit, "Result")["Result"] == "start-limit-hit", refused.stderr
    spec = tmp_path / "cluster.yaml"
    write_spec(spec, tiny_model_path, slots=3)
    deploy(spec)
    assert "(3 slot(s))" in status_of(hosts, "h2", unit, "serving tiny at ")["StatusText"]
