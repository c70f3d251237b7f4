"""``rbee deploy --only-drift`` without hosts: each host's verdict from a real plan and real release records.

The plans are ``rbee plan``'s (``build_plan`` over a preflight report of real host changes: a real host plan, its
wanted state and its diff against a host state a deploy leaves, drifted one way); the records are the text a
deploy writes (``release_record_text``) with the release id ``rbee deploy`` makes (``deploy_release_id``, the
model fetched into a real cache). The host test (``test_rollout_hosts.py``) heals real hosts.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from rbee.cli import exits
from rbee.cli.heal_cmd import exit_code, outcomes, report_json
from rbee.deploy.change_report import HostChanges, HostText, host_changes
from rbee.deploy.host_diff import RunInputs, diff, wanted_state
from rbee.deploy.host_plan import plan_deployed_host
from rbee.deploy.probe import parse_probe
from rbee.deploy.redact import Redactor
from rbee.deploy.release_record import release_record_text
from rbee.models import fetch_model
from rbee.rollout.drift import (
    HostDrift,
    WantedRelease,
    classify,
    record_command,
    recorded_release,
    wanted_release,
)
from rbee.rollout.history import deploy_release_id
from rbee.rollout.plan import Plan, build_plan
from rbee.rollout.rolling import RolloutResult, batches
from rbee.spec import load_spec, parse_spec
from tests.deploy.deployed_state import PROBE, deployed

RBEE = str(Path(sys.executable).parent / "rbee")
HOSTS = ["a", "b", "c", "d", "e", "f", "g"]
UNIT = "/etc/systemd/system/rbee-hive.service"
INPUTS = RunInputs(
    wheelhouse="wh1fingerprint0",
    engine_key="0.3.36-cpu",
    engine_wheel=("/opt/rbee/engines/0.3.36-cpu/llama.whl", "cd" * 32),
    models={"m": "ab" * 32},
    release="wh1fingerprint0:0.3.36-cpu",
    service_models={"m": "ab" * 32},
    record='{"cluster": "t"}\n',
)


def spec_text(model: Path, sha256: str | None = None, placed: bool = True, slots: int = 2) -> str:
    pin = f", sha256: '{sha256}'" if sha256 else ""
    hosts = "".join(f"  - {{name: {h}, address: 10.0.0.{10 + i}}}\n" for i, h in enumerate(HOSTS))
    placement = f"  - {{model: m, hosts: [b], slots: {slots}}}\n" if placed else "  []\n"
    return (f"cluster: t\nqueen: {{host: a}}\nhosts:\n{hosts}"
            f"models:\n  - {{id: m, source: 'file://{model}', context: 512{pin}}}\nplacements:\n{placement}"
            "deploy: {model_cache: CACHE}\n")  # fmt: skip


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace("CACHE", str(tmp_path / "cache")))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RBEE_CLUSTER_SECRET", "5e" * 32)


# ------------------------------------------------------------------------------------- the spec at hand's release


def test_the_wanted_release_is_the_one_rbee_deploy_makes(env: None, tmp_path: Path, tiny_model_path: Path) -> None:
    """From the cache (the deploy fetched the model there), and the same without it when the spec pins the sha256."""
    spec_file = write_spec(tmp_path, spec_text(tiny_model_path))
    spec = load_spec(spec_file)
    made = deploy_release_id(spec, spec_file)  # fetches into the cache, as rbee deploy does
    assert wanted_release(spec, spec_file) == WantedRelease(made)
    sha = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    pinned = write_spec(tmp_path, spec_text(tiny_model_path, sha256=sha))
    pinned_spec = load_spec(pinned)
    from_cache = wanted_release(pinned_spec, pinned)
    (tmp_path / "cache").rename(tmp_path / "elsewhere")  # a runner with an empty cache
    assert wanted_release(pinned_spec, pinned) == from_cache and from_cache.id
    assert from_cache.id == deploy_release_id(pinned_spec, pinned)  # and the deploy fetches it again: the same id


def test_a_placed_model_neither_cached_nor_pinned_leaves_the_release_unknown(
    env: None, tmp_path: Path, tiny_model_path: Path
) -> None:
    spec_file = write_spec(tmp_path, spec_text(tiny_model_path))
    assert wanted_release(load_spec(spec_file), spec_file) == WantedRelease("", ("m",))
    unplaced = write_spec(tmp_path, spec_text(tiny_model_path, placed=False))
    assert wanted_release(load_spec(unplaced), unplaced).id  # a model placed nowhere is no input of the release


def test_the_release_id_follows_the_spec(env: None, tmp_path: Path, tiny_model_path: Path) -> None:
    spec_file = write_spec(tmp_path, spec_text(tiny_model_path))
    fetch_model(load_spec(spec_file).model("m"), tmp_path / "cache")
    before = wanted_release(load_spec(spec_file), spec_file).id
    changed = write_spec(tmp_path, spec_text(tiny_model_path, slots=3))
    assert wanted_release(load_spec(changed), changed).id not in ("", before)


# --------------------------------------------------------------------------------------------- the hosts' records


def record(release: str) -> str:
    provenance = {"release": release, "rbee_version": "0.1.0", "engine_wheel_sha256": ""}
    return release_record_text("t", "b", "12" * 32, "0.3.36-cpu", "wh1", {"m": "ab" * 32}, provenance=provenance)


@pytest.mark.parametrize(
    ("text", "release"),
    [(record("0.1.0-0123456789ab"), "0.1.0-0123456789ab"), ("", ""), ("{not json", ""), ("[1]", ""),
     ('{"cluster": "t"}', ""), ('{"release": 5}', "")],
)  # fmt: skip
def test_the_recorded_release_is_read_from_the_record(text: str, release: str) -> None:
    assert recorded_release(text) == release


def test_the_record_command_reads_the_record_and_changes_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "opt rbee; touch pwned"  # quoted: a prefix is one path, whatever it holds
    prefix.mkdir()
    (prefix / "release.json").write_text(record("0.1.0-0123456789ab"))
    done = subprocess.run(["sh", "-c", record_command(str(prefix))], capture_output=True, text=True, check=True)
    assert recorded_release(done.stdout) == "0.1.0-0123456789ab"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt rbee; touch pwned"]
    (prefix / "release.json").unlink()
    gone = subprocess.run(["sh", "-c", record_command(str(prefix))], capture_output=True, text=True, check=True)
    assert gone.stdout == "" and recorded_release(gone.stdout) == ""


# ------------------------------------------------------------------------------------------- the hosts' verdicts




def hand_edited_unit() -> HostChanges:
    """A real host's changes after its hive unit was edited by hand (with the diff ``rbee plan`` shows)."""
    text = spec_text(Path("/m.gguf")).replace("model_cache: CACHE", "model_cache: /tmp/c")
    host = plan_deployed_host(parse_spec(text, "cluster.yaml"), "b", parse_probe(PROBE), {"m": 2**20}, "", "5e" * 32)
    wanted = wanted_state(host, INPUTS)
    state = deployed(wanted)
    state.files[UNIT] = replace(state.files[UNIT], sha256="0" * 64)
    on_host = host.file(UNIT).text + "# edited by hand\n"
    return host_changes(host, wanted, diff(wanted, state), state, {UNIT: HostText(on_host.encode(), len(on_host))},
                        Redactor())  # fmt: skip


def plan() -> Plan:
    """``rbee plan``'s plan of seven hosts: a in step; b, c, d, g with changes; e not reached; f failing."""
    edit = hand_edited_unit().model_dump(mode="json")
    changed = ["b", "c", "d", "g"]
    name = "rbee services | services: unit rbee-hive.service"
    document = {"plan": [{"name": name, "names": [name], "hosts_with_change": changed}]}
    preflight = {"hosts": {h: {"problems": ["needs 4 GiB RAM, has 1"] if h == "f" else []} for h in HOSTS if h != "e"},
                 "plans": {**dict.fromkeys(changed, edit), "a": HostChanges().model_dump(mode="json")}}  # fmt: skip
    return build_plan(document, preflight, HOSTS)


RELEASE = "0.1.0-0123456789ab"


def test_each_host_is_in_sync_drifted_pending_or_failed() -> None:
    """Only a host with changes whose record names the spec at hand's release has drifted."""
    recorded = {"b": RELEASE, "c": "0.1.0-ba9876543210", "d": "", "g": None}  # read for the hosts with changes
    verdicts = {v.host: v for v in classify(plan(), recorded, WantedRelease(RELEASE))}
    assert list(verdicts) == HOSTS
    assert {h: v.state for h, v in verdicts.items()} == {
        "a": "in-sync", "b": "drifted", "c": "pending", "d": "pending", "e": "failed", "f": "failed", "g": "failed"
    }  # fmt: skip
    b = verdicts["b"]
    assert b.recorded == RELEASE and b.reason == ""
    assert b.changes == (f"~ unit rbee-hive.service ({UNIT}): update, content differs", "~ systemd: reload the units")
    assert verdicts["c"].reason == f"runs release 0.1.0-ba9876543210, the spec at hand is {RELEASE}"
    assert verdicts["d"].reason.startswith("no release recorded on the host (never deployed by rbee deploy)")
    assert verdicts["e"].reason == "unreachable: its changes are unknown" and verdicts["e"].changes == ()
    assert verdicts["f"].reason == "cannot be deployed: needs 4 GiB RAM, has 1"
    assert verdicts["g"].reason == "its release record could not be read (not reached)"
    assert verdicts["a"] == HostDrift("a", "in-sync")  # its record is not even read


def test_without_the_spec_at_hands_release_no_host_counts_as_drifted() -> None:
    """A model neither cached nor pinned: the hosts with changes are left to rbee deploy, saying why."""
    verdicts = classify(plan(), {"b": RELEASE, "c": RELEASE, "d": RELEASE, "g": RELEASE}, WantedRelease("", ("m",)))
    states = {v.host: v.state for v in verdicts}
    assert [h for h, s in states.items() if s == "pending"] == ["b", "c", "d", "g"] and states["a"] == "in-sync"
    assert next(v for v in verdicts if v.host == "b").reason.startswith(
        "the spec at hand's release is unknown here: model(s) m neither in this machine's model cache nor pinned"
    )


# -------------------------------------------------------------------------------------------- heal and outcomes


def test_a_heal_goes_in_the_deploys_batches_of_the_drifted_hosts_alone(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, spec_text(Path("/m.gguf"))))
    assert batches(spec, 2) == [["a"], ["b", "c"], ["d", "e"], ["f", "g"]]  # a deploy's
    assert batches(spec, 2, ["g", "c", "a", "e"]) == [["a"], ["c", "e"], ["g"]]  # the queen's host first, alone
    assert batches(spec, 1, ["f", "b"]) == [["b"], ["f"]]
    assert batches(spec, 3, []) == []


def verdicts() -> list[HostDrift]:
    return [HostDrift("a", "in-sync"), HostDrift("b", "drifted", RELEASE, changes=("~ x",)),
            HostDrift("c", "drifted", RELEASE), HostDrift("d", "drifted", RELEASE),
            HostDrift("e", "pending", "0.1.0-ba9876543210", "runs release 0.1.0-ba9876543210, the spec at hand is X"),
            HostDrift("f", "failed", reason="unreachable: its changes are unknown")]  # fmt: skip


def test_outcomes_of_a_heal_that_failed_on_its_second_batch() -> None:
    result = RolloutResult(RELEASE, done=[["b"]], failed_batch=["c"], reason="hive c not fresh\nmore", rolled_back=True)
    done = outcomes(verdicts(), result)
    assert done == {
        "a": ("in-sync", ""),
        "b": ("healed", f"release {RELEASE} again"),
        "c": ("failed", f"the heal failed (hive c not fresh); back on its release {RELEASE}"),
        "d": ("failed", "not healed: an earlier batch failed"),
        "e": ("skipped", "release change pending (runs release 0.1.0-ba9876543210, the spec at hand is X): "
                         "run rbee deploy"),
        "f": ("failed", "unreachable: its changes are unknown"),
    }  # fmt: skip
    assert outcomes(verdicts()[2:3], replace(result, done=[], rolled_back=False))["c"][1].endswith("NOT rolled back")
    told = replace(result, failed_batch=["c", "d"], reports={"c": "unit rbee-hive.service: failed/failed", "d": "x"})
    assert outcomes(verdicts(), told)["c"][1].endswith(
        f"back on its release {RELEASE}\nc:\n  unit rbee-hive.service: failed/failed"), "its own report alone"
    assert exit_code([s for s, _ in done.values()]) == exits.FAILURE


def test_exit_0_in_sync_or_healed_3_a_release_change_pending_1_a_failure() -> None:
    assert exit_code(["in-sync", "healed"]) == exits.OK == 0
    assert exit_code([]) == exits.OK
    assert exit_code(["healed", "skipped", "in-sync"]) == exits.CHANGES_PENDING == 3
    assert exit_code(["skipped", "failed"]) == exits.FAILURE == 1


def test_the_json_report() -> None:
    healed = RolloutResult(RELEASE, done=[["b"], ["c", "d"]])
    found = verdicts()[:5]
    data = report_json(WantedRelease(RELEASE), found, outcomes(found, healed))
    assert data["version"] == 1 and data["release"] == RELEASE and data["unknown_models"] == [] and data["exit"] == 3
    assert data["hosts"]["b"] == {"status": "healed", "reason": f"release {RELEASE} again", "drift": "drifted",
                                  "recorded": RELEASE, "changes": ["~ x"]}  # fmt: skip
    assert {h: v["status"] for h, v in data["hosts"].items()} == {
        "a": "in-sync", "b": "healed", "c": "healed", "d": "healed", "e": "skipped"
    }  # fmt: skip


def test_json_goes_with_only_drift_and_a_queen_move_does_not(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path, spec_text(Path("/m.gguf")))
    done = subprocess.run([RBEE, "deploy", "--json", str(spec_file)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"}, check=False)  # fmt: skip
    assert done.returncode == 2 and "--json" in done.stderr and "goes with --only-drift" in done.stderr
    assert done.stdout == ""
    moved = subprocess.run([RBEE, "deploy", "--only-drift", "--move-queen", str(spec_file)], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}, check=False)  # fmt: skip
    assert moved.returncode == 2 and "a queen that moves is a release change" in moved.stderr


def unreachable_spec(tmp_path: Path, extra: str = "") -> Path:
    """Two hosts on loopback addresses where nothing accepts SSH (a port just closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "cluster.yaml"
    path.write_text(f"cluster: t\nqueen: {{host: a{extra}}}\nhosts:\n"
                    f"  - {{name: a, address: 127.0.0.2, ssh: {{port: {port}}}}}\n"
                    f"  - {{name: b, address: 127.0.0.3, ssh: {{port: {port}}}}}\n"
                    "models:\n  - {id: m, source: 'file:///m.gguf', context: 512}\n"
                    "placements:\n  - {model: m, hosts: [b], slots: 2}\n")  # fmt: skip
    return path


def heal_cli(spec_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_STATE_DIR": str(spec_file.parent / "state"), "COLUMNS": "200"}
    env.pop("RBEE_DRIFT_TEST_KEYS", None)
    return subprocess.run([RBEE, "deploy", "--only-drift", *args, str(spec_file)], capture_output=True, text=True,
                          timeout=120, env=env, check=False)  # fmt: skip


def test_hosts_not_reached_fail_the_heal_saying_why(tmp_path: Path) -> None:
    done = heal_cli(unreachable_spec(tmp_path), "--json")
    assert done.returncode == 1 and done.stdout == ""
    assert "rbee deploy --only-drift: the dry run failed (pyinfra exit 1)" in done.stderr
    assert "a: unreachable (refused): cannot connect to 127.0.0.2:" in done.stderr
    assert "b: unreachable (refused): cannot connect to 127.0.0.3:" in done.stderr


def test_api_keys_that_cannot_be_read_stop_the_heal_before_any_host(tmp_path: Path) -> None:
    done = heal_cli(unreachable_spec(tmp_path, ", api_keys: {env: RBEE_DRIFT_TEST_KEYS}"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("rbee deploy --only-drift: ") and "RBEE_DRIFT_TEST_KEYS" in done.stderr
    assert "dry run" not in done.stderr
