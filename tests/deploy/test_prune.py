"""Pruning what left the spec, without test hosts: the applied-hosts record (made from a spec, written and read back
by its real shell commands, hostile content refused), what ``judge`` decides from each host's answer, and the
decommission scripts run for real on a folder standing in for a host's root (systemctl recorded by a stand-in)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from rbee.deploy.applied_hosts import (
    MAX_BYTES,
    PRUNE_FILE_ENV,
    AppliedHosts,
    AppliedHostsError,
    parse,
    parse_read,
    read_command,
    record_of,
    removed_hosts,
    removes,
    url_host,
    write_command,
)
from rbee.deploy.decommission_script import DONE_MARK, decommission_script, queen_removal_script
from rbee.deploys.decommission import groups
from rbee.rollout.prune import PruneOutcome, forgettable, judge, plan_entries, report, unfinished_hosts
from rbee.rollout.pyinfra_run import PyinfraRun
from rbee.spec import ClusterSpec, parse_spec

SPEC_DIR = Path(tempfile.mkdtemp(prefix="rbee-prune-spec-"))  # holds the key file the spec names
atexit.register(shutil.rmtree, SPEC_DIR, ignore_errors=True)
(SPEC_DIR / "keys").mkdir()
(SPEC_DIR / "keys" / "b").write_text("not a real key\n")

HOSTS = """  - {name: a, address: 10.0.0.5}
  - {name: b, address: 10.0.0.6, ssh: {user: deploy, port: 2222, key: keys/b}}
  - {name: c, address: c.lan}
"""


def spec_of(hosts: str = HOSTS, queen: str = "a", placements: str = "[a, b, c]") -> ClusterSpec:
    return parse_spec(f"""cluster: t
queen: {{host: {queen}}}
hosts:
{hosts}models:
  - {{id: m, source: 'file:///m.gguf'}}
  - {{id: e, source: 'file:///e.gguf'}}
placements:
  - {{model: m, hosts: {placements}, replicas: {placements.count(",") + 1}}}
  - {{model: e, hosts: [b]}}
""", base_dir=SPEC_DIR)


WITHOUT_C = """  - {name: a, address: 10.0.0.5}
  - {name: b, address: 10.0.0.6, ssh: {user: deploy, port: 2222, key: keys/b}}
"""


def answer(record: AppliedHosts | str | None = None, queen_url: str = "http://10.0.0.5:7833") -> str:
    """What ``read_command`` prints on a host with that hive queen URL and record."""
    text = record.text() if isinstance(record, AppliedHosts) else record
    return f"hive_queen_url={queen_url}\n" + (f"applied-hosts:\n{text}" if text is not None else "")


# ----------------------------------------------------------------------------------------------------- the record


def test_the_record_holds_each_hosts_connection_settings_and_what_runs_there() -> None:
    spec = spec_of()
    record = record_of(spec)
    data = json.loads(record.text())
    assert (data["cluster"], data["queen"], data["prefix"], data["service_user"]) == ("t", "a", "/opt/rbee", "rbee")
    b = next(h for h in data["hosts"] if h["name"] == "b")
    assert b["ssh"] == {"user": "deploy", "port": 2222, "key": "keys/b", "known_hosts_file": None}  # as in the spec
    assert (b["workers"], b["models"]) == (["m-1", "e-1"], ["e", "m"])
    assert record.text() == record_of(spec).text() and record.text().count("\n") == 1  # same record, same bytes
    assert parse(record.text(), "a", "t") == record


def test_removed_hosts_and_what_pruning_one_removes() -> None:
    record = record_of(spec_of())
    gone = removed_hosts(record, spec_of(WITHOUT_C, placements="[a, b]"))
    assert [h.name for h in gone] == ["c"]
    assert removes(record, gone[0]) == ["rbee-hive.service", "rbee-worker@m-1.service", "model m", "/etc/rbee",
                                        "/opt/rbee"]  # fmt: skip


def test_a_new_record_keeps_the_removed_hosts_not_pruned_yet() -> None:
    before = record_of(spec_of())
    after = spec_of(WITHOUT_C, placements="[a, b]")
    assert record_of(after, before).names() == ["a", "b"]
    kept = record_of(after, before, keep=("c",))
    assert kept.names() == ["a", "b", "c"] and kept.get("c") == before.get("c")


def _hostile(record: AppliedHosts, **host_fields: Any) -> str:
    data = json.loads(record.text())
    data["hosts"][1].update(host_fields)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"address": "10.0.0.6; rm -rf /"}, "hosts.1.address"),
        ({"address": "-oProxyCommand=sh"}, "hosts.1.address"),
        ({"name": "B"}, "hosts.1.name"),
        ({"name": "../etc"}, "hosts.1.name"),
        ({"ssh": {"user": "root;id", "port": 22}}, "hosts.1.ssh.user"),
        ({"ssh": {"user": "deploy", "port": 0}}, "hosts.1.ssh.port"),
        ({"ssh": {"user": "deploy", "key": "../../root/.ssh/id"}}, "hosts.1.ssh.key"),
        ({"ssh": {"user": "deploy", "proxy": "x"}}, "hosts.1.ssh.proxy"),
        ({"workers": ["m-1; reboot"]}, "hosts.1.workers.0"),
        ({"models": ["$(id)"]}, "hosts.1.models.0"),
        ({"extra": 1}, "hosts.1.extra"),
    ],
)  # fmt: skip
def test_hostile_content_is_refused_naming_the_field(change: dict[str, Any], where: str) -> None:
    text = _hostile(record_of(spec_of()), **change)
    with pytest.raises(AppliedHostsError) as err:
        parse(text, "a", "t")
    assert str(err.value).startswith("a: applied-hosts.json is not a record rbee wrote (") and where in str(err.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not a record rbee wrote"),
        ("", "not a record rbee wrote"),
        ('{"version": 2}', "version"),
        (json.dumps({**json.loads(record_of(spec_of()).text()), "prefix": "/opt/../etc"}), "prefix"),
        (json.dumps({**json.loads(record_of(spec_of()).text()), "service_user": "root user"}), "service_user"),
        (json.dumps({**json.loads(record_of(spec_of()).text()), "cluster": "other"}), "records cluster 'other'"),
        (" " * (MAX_BYTES + 1), f"over {MAX_BYTES} bytes"),
    ],
)
def test_a_record_that_is_not_rbees_is_refused(text: str, says: str) -> None:
    with pytest.raises(AppliedHostsError, match=None) as err:
        parse(text, "a", "t")
    assert says in str(err.value)


def test_a_host_named_twice_is_refused() -> None:
    data = json.loads(record_of(spec_of()).text())
    data["hosts"].append(data["hosts"][0])
    with pytest.raises(AppliedHostsError, match="hosts named more than once: a"):
        parse(json.dumps(data), "a", "t")


def test_written_and_read_back_by_the_real_commands(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "rbee"
    prefix.mkdir(parents=True)
    nothing = subprocess.run(["sh", "-c", read_command(str(prefix))], capture_output=True, text=True, check=True)
    found = parse_read(nothing.stdout)
    assert found.record is None
    record = record_of(spec_of())
    subprocess.run(["sh", "-c", write_command(str(prefix), record)], check=True)
    path = prefix / "applied-hosts.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and [p.name for p in prefix.iterdir()] == ["applied-hosts.json"]
    back = subprocess.run(["sh", "-c", read_command(str(prefix))], capture_output=True, text=True, check=True)
    found = parse_read(back.stdout)
    assert found.record == record.text() and parse(found.record, "a", "t") == record
    path.write_text("x" * (MAX_BYTES + 50))  # read no further than one byte past the limit
    long = parse_read(subprocess.run(["sh", "-c", read_command(str(prefix))], capture_output=True, text=True).stdout)
    assert long.record is not None and len(long.record) == MAX_BYTES + 1


def test_the_read_gives_the_queen_url_of_the_hive_config() -> None:
    assert parse_read('hive_queen_url="http://10.0.0.5:7833"\n').hive_queen_url == "http://10.0.0.5:7833"
    assert parse_read("hive_queen_url=\n") == parse_read("")
    assert [url_host(u) for u in ("https://[fd00::1]:7833", "http://Q.lan:1", "nope")] == ["fd00::1", "q.lan", ""]


# ------------------------------------------------------------------------------------------------------- judge


def test_nothing_recorded_nothing_pruned() -> None:
    state = judge(spec_of(), {"a": answer(), "b": answer(), "c": answer()})
    assert (state.prune, state.problems, state.record) == ([], [], None)


def test_a_host_recorded_and_no_longer_in_the_spec_is_pruned() -> None:
    recorded = record_of(spec_of())
    spec = spec_of(WITHOUT_C, placements="[a, b]")
    state = judge(spec, {"a": answer(recorded), "b": answer()})
    assert [h.name for h in state.prune] == ["c"] and state.problems == [] and state.old_queen is None
    assert state.record_text == recorded.text()
    assert plan_entries(state) == [("c", ["rbee-hive.service", "rbee-worker@m-1.service", "model m", "/etc/rbee",
                                          "/opt/rbee"])]  # fmt: skip


def test_only_a_host_that_left_the_spec_can_be_forgotten() -> None:
    recorded = record_of(spec_of())
    state = judge(spec_of(WITHOUT_C, placements="[a, b]"), {"a": answer(recorded), "b": answer()})
    assert forgettable(state, ["c"]) == []
    assert forgettable(state, ["b", "x" * 100]) == [
        "--forget 'b': not a host that left the spec (to prune: c)",
        f"--forget {'x' * 64!r}: not a host that left the spec (to prune: c)",
    ]  # fmt: skip
    assert forgettable(judge(spec_of(), {"a": answer(), "b": answer(), "c": answer()}), ["c"]) == [
        "--forget 'c': not a host that left the spec (to prune: none)"]  # fmt: skip


def test_the_queens_host_unreached_prunes_nothing() -> None:
    state = judge(spec_of(WITHOUT_C, placements="[a, b]"), {"b": answer()})
    assert not state.queen_reached and state.prune == [] and state.problems == []
    assert state.notes == ["a (the queen's host) did not answer: the applied hosts are unknown, none is pruned"]


def test_a_record_that_is_not_valid_stops_unless_no_prune() -> None:
    answers = {"a": answer('{"hosts": "x"}'), "b": answer()}
    stopped = judge(spec_of(WITHOUT_C, placements="[a, b]"), answers)
    assert len(stopped.problems) == 1 and stopped.problems[0].startswith("a: applied-hosts.json is not a record")
    assert "deploy with --no-prune" in stopped.problems[0] and stopped.prune == []
    going = judge(spec_of(WITHOUT_C, placements="[a, b]"), answers, no_prune=True)
    assert going.problems == [] and going.notes == stopped.problems


def test_a_queen_that_moves_is_refused_unless_asked_for() -> None:
    recorded = record_of(spec_of())  # the queen was on a
    moved = spec_of(queen="b")
    answers = {"a": answer(recorded), "b": answer(), "c": answer()}
    refused = judge(moved, answers)
    assert len(refused.problems) == 1 and "the queen moves to b from a" in refused.problems[0]
    assert "rbee deploy --move-queen" in refused.problems[0]
    allowed = judge(moved, answers, move_queen=True)
    assert allowed.problems == [] and allowed.old_queen == "a" and allowed.prune == []


def test_an_older_record_left_by_a_queen_move_goes_with_that_queen() -> None:
    old, new = record_of(spec_of()), record_of(spec_of(queen="b"))
    state = judge(spec_of(queen="b"), {"a": answer(old), "b": answer(new), "c": answer()})
    assert state.problems == [] and state.record == new and state.old_queen == "a"
    assert state.notes == ["an older applied-hosts record on a is removed (the queen moved)"]
    several = judge(spec_of(queen="c"), {"a": answer(old), "b": answer(new), "c": answer()})
    assert several.problems == ["applied-hosts records on several hosts (a, b), none on c"]


def test_a_queen_removed_with_its_host_is_seen_in_the_hives_configs() -> None:
    spec = spec_of(WITHOUT_C.replace("name: a, address: 10.0.0.5", "name: d, address: 10.0.0.9"), queen="d",
                   placements="[d, b]")  # fmt: skip
    answers = {"d": answer(queen_url=""), "b": answer(queen_url="http://10.0.0.5:7833")}
    refused = judge(spec, answers)
    assert len(refused.problems) == 1
    assert "the queen moves to d from 10.0.0.5 (where the hives of b report)" in refused.problems[0]
    assert judge(spec, answers, move_queen=True).problems == []


def test_a_record_naming_another_queen_is_refused() -> None:
    other = record_of(spec_of(queen="b"))
    state = judge(spec_of(), {"a": answer(other), "b": answer(), "c": answer()})
    assert state.problems == ["a: its applied-hosts record names 'b' as the queen's host"] and state.prune == []


# --------------------------------------------------------------------------------------------- the scripts


@pytest.fixture
def fake_host(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A root with what a deploy leaves (systemd marker, units, /etc/rbee, state, prefix) and a ``systemctl`` stand-in
    that logs its arguments (every service stops: none is active); the environment to run a script with."""
    root = tmp_path / "root"
    for folder in ("run/systemd/system", "etc/systemd/system", "etc/rbee/workers", "etc/rbee/credentials",
                   "var/lib/rbee", "opt/rbee/venv/bin", "opt/rbee/models/.rbee-releases/r1", "opt/rbee/stamps",
                   "opt/rbee/releases/r1", "opt/rbee/wheelhouse", "opt/rbee/engines/k"):  # fmt: skip
        (root / folder).mkdir(parents=True)
    for unit in ("rbee-queen.service", "rbee-hive.service", "rbee-worker@.service", "ssh.service"):
        (root / "etc/systemd/system" / unit).write_text("[Unit]\n")
    for name in ("m-1", "e-1"):
        (root / f"etc/rbee/workers/{name}.env").write_text("RBEE_WORKER_ARGS=\n")
    for path in ("etc/rbee/hive.yaml", "etc/rbee/credentials/hive.credential", "var/lib/rbee/hive.db",
                 "opt/rbee/models/m.gguf", "opt/rbee/release.json", "opt/rbee/applied-hosts.json",
                 "opt/rbee/.applied-hosts.json.rbee-tmp-1", "opt/rbee/venv/bin/python"):  # fmt: skip
        (root / path).write_text("x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                    'case "$1" in list-units) [ "$5" = "rbee-worker@*.service" ] && '
                    'echo "rbee-worker@x-1.service loaded active running w";; is-active) exit 3;; esac\nexit 0\n')
    fake.chmod(0o755)
    return root, {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)}


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_decommission_drains_workers_first_then_removes_everything_of_rbee(
    fake_host: tuple[Path, dict[str, str]],
) -> None:
    root, env = fake_host
    (root / "opt/rbee/notes.txt").write_text("the operator's")
    done = _run(decommission_script("/opt/rbee", root=str(root)), env)
    assert done.returncode == 0, done.stderr
    assert DONE_MARK in done.stdout and "kept /opt/rbee: it holds files not rbee's" in done.stdout
    calls = Path(env["LOG"]).read_text().splitlines()
    workers = "rbee-worker@e-1.service rbee-worker@m-1.service rbee-worker@x-1.service"
    assert [c for c in calls if not c.startswith("list-units")] == [
        f"stop {workers}", f"disable {workers}",
        "stop rbee-hive.service rbee-queen.service", "disable rbee-hive.service rbee-queen.service",
        "daemon-reload", "reset-failed rbee-*",
    ]  # fmt: skip
    assert sorted(p.name for p in (root / "etc/systemd/system").iterdir()) == ["ssh.service"]
    assert not (root / "etc/rbee").exists() and not (root / "var/lib/rbee").exists()
    assert sorted(p.name for p in (root / "opt/rbee").iterdir()) == ["notes.txt"]
    (root / "opt/rbee/notes.txt").unlink()
    again = _run(decommission_script("/opt/rbee", root=str(root)), env)  # idempotent; an empty prefix goes
    assert again.returncode == 0 and DONE_MARK in again.stdout and not (root / "opt/rbee").exists()


def test_decommission_fails_while_an_rbee_service_still_runs(fake_host: tuple[Path, dict[str, str]]) -> None:
    root, env = fake_host
    fake = Path(env["PATH"].split(":")[0]) / "systemctl"
    fake.write_text('#!/bin/sh\n[ "$1" = list-units ] && [ "$5" = "rbee-*" ] && '
                    'echo "rbee-hive.service loaded active running h"\nexit 0\n')  # fmt: skip
    done = _run(decommission_script("/opt/rbee", root=str(root)), env)
    assert done.returncode == 1 and "rbee services still running: rbee-hive.service" in done.stderr
    assert DONE_MARK not in done.stdout and (root / "etc/rbee/hive.yaml").exists()  # nothing removed under it


def test_removing_a_moved_queen_leaves_the_hive(fake_host: tuple[Path, dict[str, str]]) -> None:
    root, env = fake_host
    (root / "etc/rbee/queen.yaml").write_text("x")
    (root / "etc/rbee/credentials/cluster-secret").write_text("x")
    done = _run(queen_removal_script("/opt/rbee", root=str(root)), env)
    assert done.returncode == 0, done.stderr
    calls = Path(env["LOG"]).read_text().splitlines()
    assert calls[:2] == ["stop rbee-queen.service", "disable rbee-queen.service"] and "daemon-reload" in calls
    assert sorted(p.name for p in (root / "etc/systemd/system").iterdir()) == [
        "rbee-hive.service", "rbee-worker@.service", "ssh.service"]  # fmt: skip
    assert sorted(p.name for p in (root / "etc/rbee").iterdir()) == ["credentials", "hive.yaml", "workers"]
    assert [p.name for p in (root / "etc/rbee/credentials").iterdir()] == ["hive.credential"]
    assert not (root / "opt/rbee/applied-hosts.json").exists() and (root / "opt/rbee/models/m.gguf").exists()


# ------------------------------------------------------------------------------------------ finishing a deploy


def test_the_prune_inventory_reads_its_file_and_refuses_an_unknown_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hosts.json"
    entry = {"inventory": "c", "data": {"ssh_hostname": "c.lan", "rbee_host": "c", "rbee_action": "decommission",
                                        "rbee_prefix": "/opt/rbee"}}  # fmt: skip
    path.write_text(json.dumps({"hosts": [entry]}))
    monkeypatch.setenv(PRUNE_FILE_ENV, str(path))
    assert groups() == ([("c", entry["data"])],)
    path.write_text(json.dumps({"hosts": [{**entry, "data": {**entry["data"], "rbee_action": "rm -rf /"}}]}))
    with pytest.raises(SystemExit, match="c: unknown action 'rm -rf /'"):
        groups()
    monkeypatch.delenv(PRUNE_FILE_ENV)
    with pytest.raises(SystemExit):
        groups()


def test_a_host_is_done_only_when_pyinfra_finished_it() -> None:
    document = {"results": {"failed_hosts": ["b"], "operations": [
        {"success": ["a"], "no_change": [], "error": ["b"]}]}}  # fmt: skip
    assert unfinished_hosts(PyinfraRun(1, document, "", {}), ["a", "b", "c"]) == {"b", "c"}
    assert unfinished_hosts(PyinfraRun(1, {}, "no hosts remaining", {}), ["a"]) == {"a"}  # stopped before its results


def test_what_a_deploy_says_of_its_prune_and_when_it_fails_for_it() -> None:
    spec = spec_of()
    outcome = PruneOutcome(pruned=["c"], not_pruned={"d": "d: unreachable (timed out)"}, forgotten=["e"])
    done, wrong, failed = report(outcome, spec)
    assert done == [
        "pruned c: its rbee services stopped and removed, its hive deregistered",
        "forgot e: no longer recorded, its hive deregistered; nothing was sent to it (if it comes back, stop rbee "
        "there by hand)",
    ]  # fmt: skip
    assert wrong == ["d: not pruned: d: unreachable (timed out); a later deploy tries again (gone for good: "
                     "rbee deploy --forget d)"] and not failed  # fmt: skip
    stopping = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"on_unreachable": "stop"})})
    assert report(outcome, stopping)[2]
    assert report(PruneOutcome(problems=["a: the applied-hosts record was not written"]), spec)[2]
