"""A host removed from the spec is pruned by the next deploy, on real test hosts of its own (h5: queen + hive, h6).

The cluster runs the tiny model on both hosts and a second model (``tiny2``) on h5. Then the spec drops h6 and
``tiny2``: ``rbee plan`` lists h6 for pruning (exit 3), ``rbee deploy --no-prune`` keeps it serving (and removes
``tiny2`` from h5: its worker, its file, so its hive's catalog entry), and ``rbee deploy`` prunes h6 while a
client streams completions: no request fails, nothing of rbee is left on h6 but its service account, the queen
no longer lists its hive (also a few heartbeat intervals later), and a plan afterwards has nothing to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from rbee.testhosts.naming import index
from tests.hosts.plugin import session_layout

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RBEE = str(Path(sys.executable).parent / "rbee")
API_KEY = "sk-prune-test"
QUEEN = "http://10.210.0.15:7833"
HOSTS = ("h5", "h6")  # hosts of their own: the other deploy tests keep what they put on h1..h4


def write_spec(path: Path, model: Path, hosts: tuple[str, ...], queen: str = "h5") -> None:
    both = hosts == HOSTS
    models = f"- {{id: tiny, source: 'file://{model}', context: 512}}\n"
    models += f"- {{id: tiny2, source: 'file://{model}', context: 512}}" if both else ""
    placements = "- {model: tiny, hosts: [h5, h6], replicas: 2}\n- {model: tiny2, hosts: [h5]}" if both else (
        "- {model: tiny, hosts: [h5]}")  # fmt: skip
    path.write_text(spec_for_hosts(
        list(hosts), cluster="prunetest", queen_host=queen, models_yaml=models, placements_yaml=placements,
        extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
        "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}",
    ))  # fmt: skip


def rbee(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_TEST_KEYS": API_KEY}
    return subprocess.run([RBEE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


RECORD = "/opt/rbee/release.json"
"""Names the release, whose id digests rbee's code: editing a shared checkout while a test runs changes it."""


def planned(spec: Path, *flags: str) -> tuple[list[str], dict[str, object]]:
    """``rbee plan --json``: the hosts to prune, and each host's changes but those of the release record."""
    done = rbee("plan", "--json", *flags, str(spec))
    assert done.returncode in (0, 3), done.stdout + done.stderr
    data = json.loads(done.stdout)
    changed: dict[str, object] = {}
    for host, found in data["hosts"].items():
        changes = found["changes"] or {}
        files = [f["path"] for f in (*changes.get("files", []), *changes.get("units", [])) if f["path"] != RECORD]
        rest = {k: v for k, v in changes.items() if k not in ("files", "units") and v}
        if files or rest or found["status"] not in ("ok", "changes"):
            changed[host] = {"files": files, **rest, "status": found["status"]}
    return [p["host"] for p in data["prune"]], changed


def hive_ids(queen: str = QUEEN) -> list[str]:
    hives = httpx.get(f"{queen}/v1/hives", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10).json()
    return sorted(h["hive_id"] for h in hives["hives"])


@pytest.fixture(scope="module")
def hosts(test_hosts: TestHosts) -> Iterator[TestHosts]:
    count, _ = session_layout()
    for name in HOSTS:
        test_hosts.start(name)  # a fresh disk when the session does not run it
    try:
        yield test_hosts
    finally:
        for name in HOSTS:
            if index(name) > count:
                test_hosts.remove(name)


def test_a_host_removed_from_the_spec_is_listed_then_kept_then_pruned(
    hosts: TestHosts, tiny_model_path: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "cluster.yaml"
    started = time.monotonic()
    write_spec(spec, tiny_model_path, HOSTS)
    first = rbee("deploy", str(spec))
    assert first.returncode == 0, first.stdout + first.stderr
    first_s = time.monotonic() - started
    assert hive_ids() == ["h5", "h6"]
    record = json.loads(hosts.ssh("h5", "cat /opt/rbee/applied-hosts.json").stdout)
    assert [h["name"] for h in record["hosts"]] == ["h5", "h6"] and record["queen"] == "h5"
    h6 = next(h for h in record["hosts"] if h["name"] == "h6")
    assert (h6["address"], h6["workers"], h6["models"]) == ("10.210.0.16", ["tiny-1"], ["tiny"])

    write_spec(spec, tiny_model_path, ("h5",))
    listed = rbee("plan", "--json", str(spec))
    assert listed.returncode == 3, listed.stdout + listed.stderr
    assert json.loads(listed.stdout)["prune"] == [{"host": "h6", "forget": False, "removes": [
        "rbee-hive.service", "rbee-worker@tiny-1.service", "model tiny", "/etc/rbee", "/opt/rbee"]}]  # fmt: skip
    text = rbee("plan", str(spec))
    assert text.returncode == 3 and "1 to prune" in text.stdout and "h6: to prune (it left the spec)" in text.stdout
    unlisted = json.loads(rbee("plan", "--json", "--no-prune", str(spec)).stdout)
    assert unlisted["prune"] == [] and "h6" not in unlisted["hosts"]

    kept = rbee("deploy", "--no-prune", str(spec))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "hosts that left the spec: h6: kept (--no-prune)" in kept.stdout and "pruned h6" not in kept.stdout
    assert hosts.ssh("h6", "systemctl is-active rbee-hive.service rbee-worker@tiny-1.service").stdout.split() == [
        "active", "active"]  # fmt: skip
    assert hive_ids() == ["h5", "h6"]
    h5_models = hosts.ssh("h5", "ls /opt/rbee/models; ls /etc/rbee/workers").stdout.split()
    assert h5_models == ["tiny.gguf", "tiny-1.env"], h5_models  # tiny2's worker and file went with its placement
    assert "rbee-worker@tiny2-1" not in hosts.ssh("h5", "systemctl list-units --all --plain 'rbee-*'").stdout
    models = httpx.get(f"{QUEEN}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]  # h5's hive forgot tiny2 (its file went before it restarted)
    assert planned(spec, "--no-prune") == ([], {})
    assert planned(spec) == (["h6"], {})  # still recorded: a deploy without --no-prune prunes it

    failed: list[str] = []
    served = [0]
    stop = threading.Event()

    def traffic() -> None:
        client = openai.OpenAI(base_url=f"{QUEEN}/v1", api_key=API_KEY, max_retries=0, timeout=60)
        while not stop.is_set():
            try:
                stream = client.completions.create(model="tiny", prompt="Bees", max_tokens=24, stream=True)
                served[0] += bool("".join(c.choices[0].text for c in stream if c.choices))
            except openai.OpenAIError as exc:
                failed.append(repr(exc))

    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    try:
        prune_started = time.monotonic()
        pruned = rbee("deploy", str(spec))
        prune_s = time.monotonic() - prune_started
    finally:
        stop.set()
        client.join(timeout=120)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "rbee deploy: pruned h6: its rbee services stopped and removed, its hive deregistered" in pruned.stdout
    assert failed == [] and served[0] >= 3, (failed[:5], served)
    left = hosts.ssh("h6", "systemctl list-units --all --plain --no-legend 'rbee-*'; ls /etc/systemd/system "
                           "| grep rbee; ls -d /etc/rbee /var/lib/rbee /opt/rbee 2>&1; id -u rbee >/dev/null && "
                           "echo account kept").stdout  # fmt: skip
    assert left.split("\n") == [
        "ls: cannot access '/etc/rbee': No such file or directory",
        "ls: cannot access '/var/lib/rbee': No such file or directory",
        "ls: cannot access '/opt/rbee': No such file or directory",
        "account kept", "",
    ], left  # fmt: skip
    assert hive_ids() == ["h5"]
    time.sleep(4)  # four heartbeat intervals: nothing on h6 beats any more
    assert hive_ids() == ["h5"]
    record = json.loads(hosts.ssh("h5", "cat /opt/rbee/applied-hosts.json").stdout)
    assert [h["name"] for h in record["hosts"]] == ["h5"]
    assert planned(spec) == ([], {})
    print(f"prune host test: {time.monotonic() - started:.0f} s (first deploy {first_s:.0f} s, prune {prune_s:.0f} s)")


def test_a_host_gone_for_good_is_retried_by_each_deploy_until_forgotten(
    hosts: TestHosts, tiny_model_path: Path, tmp_path: Path
) -> None:
    """h6 deployed, then removed from the spec while its cable is pulled (a dead machine): each deploy reports it not
    pruned and names ``--forget``; ``rbee deploy --forget h6`` drops it from the record and deregisters its hive
    without reaching it; a host that did not leave the spec is refused before anything changes."""
    spec = tmp_path / "cluster.yaml"
    write_spec(spec, tiny_model_path, HOSTS)
    deployed = rbee("deploy", str(spec))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert hive_ids() == ["h5", "h6"]
    write_spec(spec, tiny_model_path, ("h5",))
    hosts.cable("h6", False)
    try:
        retried = rbee("deploy", str(spec))
        assert retried.returncode == 0, retried.stdout + retried.stderr  # deploy.on_unreachable: continue
        assert "rbee deploy: h6: not pruned: " in retried.stderr and "rbee deploy --forget h6)" in retried.stderr
        assert planned(spec) == (["h6"], {}), "still recorded: retried by the next deploy"
        previewed = rbee("plan", "--forget", "h6", str(spec))  # what the deploy below does, shown first
        assert previewed.returncode == 3 and "1 to forget" in previewed.stdout, previewed.stdout + previewed.stderr
        assert "h6: to forget (gone for good, --forget)" in previewed.stdout
        assert "stop and remove" not in previewed.stdout
        assert rbee("plan", "--forget", "h5", str(spec)).returncode == 2
        refused = rbee("deploy", "--forget", "h5", str(spec))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "--forget 'h5': not a host that left the spec (to prune: h6)" in refused.stderr
        assert "nothing changed" in refused.stderr and "batch" not in refused.stdout
        started = time.monotonic()
        forgot = rbee("deploy", "--forget", "h6", str(spec))
        forget_s = time.monotonic() - started
        assert forgot.returncode == 0, forgot.stdout + forgot.stderr
        assert "rbee deploy: forgot h6: no longer recorded, its hive deregistered" in forgot.stdout
        assert "not pruned" not in forgot.stderr
        assert hive_ids() == ["h5"]
        record = json.loads(hosts.ssh("h5", "cat /opt/rbee/applied-hosts.json").stdout)
        assert [h["name"] for h in record["hosts"]] == ["h5"]
        assert planned(spec) == ([], {})
        print(f"forget: {forget_s:.1f} s")
    finally:
        hosts.cable("h6", True)
        hosts.ssh("h6", "systemctl disable --now rbee-hive.service 'rbee-worker@*' || true")


def test_a_queen_moves_to_another_host_only_when_asked_and_the_old_one_goes(
    hosts: TestHosts, tiny_model_path: Path, tmp_path: Path
) -> None:
    """The spec moves the queen from h5 to h6: ``rbee deploy`` refuses before anything changes (clients would lose
    the endpoint), ``rbee deploy --move-queen`` starts the queen on h6, both hives report there, and h5's queen is
    stopped and removed (h5 stays a hive); a plan afterwards has nothing to do."""
    spec = tmp_path / "cluster.yaml"
    write_spec(spec, tiny_model_path, HOSTS)
    deployed = rbee("deploy", str(spec))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert hive_ids() == ["h5", "h6"]
    write_spec(spec, tiny_model_path, HOSTS, queen="h6")
    refused = rbee("deploy", str(spec))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "the queen moves to h6 from h5" in refused.stderr and "rbee deploy --move-queen" in refused.stderr
    assert "nothing changed" in refused.stderr and hive_ids() == ["h5", "h6"]
    started = time.monotonic()
    moved = rbee("deploy", "--move-queen", str(spec))
    move_s = time.monotonic() - started
    assert moved.returncode == 0, moved.stdout + moved.stderr
    new_queen = "http://10.210.0.16:7833"
    assert hive_ids(new_queen) == ["h5", "h6"]
    client = openai.OpenAI(base_url=f"{new_queen}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    assert client.completions.create(model="tiny", prompt="Bees", max_tokens=8).choices[0].text is not None
    gone = "/etc/systemd/system/rbee-queen.service /opt/rbee/applied-hosts.json"
    left = hosts.ssh("h5", f"systemctl is-active rbee-queen.service rbee-hive.service; ls {gone} 2>&1").stdout
    assert left.split("\n")[:2] == ["inactive", "active"], left
    assert "rbee-queen.service': No such file" in left and "applied-hosts.json': No such file" in left, left
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{QUEEN}/health", timeout=5)
    record = json.loads(hosts.ssh("h6", "cat /opt/rbee/applied-hosts.json").stdout)
    assert record["queen"] == "h6" and [h["name"] for h in record["hosts"]] == ["h5", "h6"]
    assert planned(spec) == ([], {})
    print(f"queen move: {move_s:.1f} s")
