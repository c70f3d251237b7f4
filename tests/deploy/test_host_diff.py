"""The host's state (``rbee.deploy.host_state``) and the diff the deploy acts on (``rbee.deploy.host_diff``).

The state script runs for real (``sh`` on a folder standing in for a host's prefix); the diff is checked
on the state a deploy leaves behind (no change at all) and on each kind of drift, one at a time.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from rbee.deploy.host_diff import Changes, RunInputs, Wanted, diff, wanted_state
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.host_state import (
    HostState,
    Meta,
    RemoteFile,
    UnitState,
    parse_state,
    resumable_temp,
    state_script,
    upload_stamp,
    upload_stamp_command,
)
from rbee.deploy.layout import HostLayout
from rbee.deploy.probe import parse_probe
from rbee.deploys.atomic import FileTail
from rbee.spec import parse_spec
from tests.deploy.deployed_state import PROBE, SPEC, deployed

MODEL_SHA = "ab" * 32
INPUTS = RunInputs(
    wheelhouse="wh1",
    engine_key="0.3.36-cpu",
    engine_wheel=("/opt/rbee/engines/0.3.36-cpu/llama.whl", "cd" * 32),
    models={"m": MODEL_SHA},
    release="wh1:0.3.36-cpu",
    service_models={"m": MODEL_SHA},
    record='{"cluster": "t"}\n',
)


def run_script(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, timeout=30).stdout


def plan() -> HostPlan:
    return plan_deployed_host(parse_spec(SPEC, "cluster.yaml"), "a", parse_probe(PROBE), {"m": 2**20}, "sk-1\n")




@pytest.fixture
def wanted() -> Wanted:
    return wanted_state(plan(), INPUTS)


def kinds(changes: Changes) -> list[tuple[str, str]]:
    return [(c.kind, c.target) for c in changes.items]


def test_a_deployed_host_needs_nothing(wanted: Wanted) -> None:
    assert kinds(diff(wanted, deployed(wanted))) == []


def test_a_bare_host_needs_everything(wanted: Wanted) -> None:
    changes = diff(wanted, HostState())
    assert changes.has("account") and changes.has("wheelhouse") and changes.has("daemon-reload")
    assert {c.target for c in changes.of("install")} == {"runtime", "engine"}
    assert {c.target for c in changes.of("upload")} == {"/opt/rbee/models/m.gguf", INPUTS.engine_wheel[0]}  # type: ignore[index]
    assert {c.target for c in changes.of("file")} == {f.path for f in wanted.files}
    assert {c.target for c in changes.of("restart")} == set(wanted.services) == {c.target for c in changes.of("enable")}


def test_a_model_replaced_by_hand_is_noticed_by_its_inode(wanted: Wanted) -> None:
    state = deployed(wanted)
    path = "/opt/rbee/models/m.gguf"
    state.big[path] = replace(state.big[path], inode=999)  # same size and mtime, another file
    assert kinds(diff(wanted, state)) == [("upload", path)]


def test_a_new_model_checksum_uploads_and_restarts_its_services(wanted: Wanted) -> None:
    state = deployed(wanted)
    new = wanted_state(plan(), replace(INPUTS, models={"m": "00" * 32}, service_models={"m": "00" * 32}))
    got = kinds(diff(new, state))
    assert ("upload", "/opt/rbee/models/m.gguf") in got
    assert {t for k, t in got if k == "restart"} == {"rbee-hive.service", "rbee-worker@m-1.service"}


def test_the_engine_a_host_installed_for_its_feature_set_is_the_one_it_keeps(wanted: Wanted) -> None:
    """A control machine whose cache lacks the engine (a fresh CI runner) or holds another build of the same feature
    set plans with the host's own wheel: found by the install stamp and the verified upload in the set's folder."""
    state = deployed(wanted)
    path, sha = INPUTS.engine_wheel  # type: ignore[misc]
    assert state.installed_engine("/opt/rbee/engines", "0.3.36-cpu") == (path, sha)
    assert state.installed_engine("/opt/rbee/engines", "0.3.36-cuda") is None, "another feature set"
    other = replace(INPUTS, engine_wheel=(path, "ef" * 32))
    assert ("upload", path) in kinds(diff(wanted_state(plan(), other), state)), "what the diff alone would do"
    state.big[path] = replace(state.big[path], inode=999)
    assert state.installed_engine("/opt/rbee/engines", "0.3.36-cpu") is None, "replaced by hand: not the upload"
    state = deployed(wanted)
    state.stamps["engine"] = "0.3.35-cpu"
    assert state.installed_engine("/opt/rbee/engines", "0.3.36-cpu") is None, "installed: another set"


def test_a_dry_run_without_the_model_uploads_it(wanted: Wanted) -> None:
    dry = wanted_state(plan(), replace(INPUTS, models={"m": None}))
    assert ("upload", "/opt/rbee/models/m.gguf") in kinds(diff(dry, deployed(wanted)))


def test_mode_owner_and_content_drift(wanted: Wanted) -> None:
    state = deployed(wanted)
    hive, unit = "/etc/rbee/hive.yaml", "/etc/systemd/system/rbee-hive.service"
    state.files[hive] = replace(state.files[hive], meta=Meta("600", "root", "rbee"))
    state.files[unit] = replace(state.files[unit], sha256="0" * 64)
    state.dirs["/etc/rbee"] = Meta("755", "root", "root")
    assert kinds(diff(wanted, state)) == [
        ("dir", "/etc/rbee"),
        ("file-mode", hive),
        ("file", unit),
        ("daemon-reload", "systemd"),
    ]


def test_services_started_enabled_and_reloaded_as_systemd_reports_them(wanted: Wanted) -> None:
    state = deployed(wanted)
    state.units["rbee-hive.service"] = UnitState(enabled=True, active=False)
    state.units["rbee-queen.service"] = UnitState(enabled=False, active=True, need_reload=True)
    assert kinds(diff(wanted, state)) == [
        ("daemon-reload", "systemd"),
        ("enable", "rbee-queen.service"),
        ("start", "rbee-hive.service"),
    ]


def test_leftovers_stale_workers_and_the_old_keys_file(wanted: Wanted) -> None:
    state = deployed(wanted)
    state.leftovers = ("/etc/rbee/.hive.yaml.rbee-tmp-0badf00d",)
    state.leftover_sizes = {"/etc/rbee/.hive.yaml.rbee-tmp-0badf00d": 10}
    state.files["/etc/rbee/workers/gone-1.env"] = RemoteFile("0" * 64, Meta("640", "root", "rbee"))
    state.files["/etc/rbee/api-keys"] = RemoteFile("0" * 64, Meta("640", "root", "rbee"))
    assert kinds(diff(wanted, state)) == [
        ("leftovers", "/etc/rbee/.hive.yaml.rbee-tmp-0badf00d"),
        ("remove-file", "/etc/rbee/api-keys"),
        ("remove-worker", "gone-1"),
    ]


def test_a_model_no_longer_placed_is_removed_and_a_placed_one_kept(wanted: Wanted) -> None:
    state = deployed(wanted)
    state.big["/opt/rbee/models/gone.gguf"] = Meta("644", "root", "root", 100, 1700000000, 77)
    state.big["/opt/rbee/engines/0.3.36-cpu/old.whl"] = Meta("644", "root", "root", 100, 1700000000, 78)
    assert kinds(diff(wanted, state)) == [("remove-model", "/opt/rbee/models/gone.gguf")]
    unplaced = wanted_state(plan_deployed_host(parse_spec(SPEC.replace("hosts: [a]", "hosts: [b]"), "cluster.yaml"),
                                               "a", parse_probe(PROBE), {}, "sk-1\n"), replace(INPUTS, models={}))
    assert ("remove-model", "/opt/rbee/models/m.gguf") in kinds(diff(unplaced, deployed(wanted)))


def test_a_changed_wheelhouse_listing_resyncs_but_does_not_reinstall(wanted: Wanted) -> None:
    state = deployed(wanted)
    state.wheelhouse_listing = "0" * 64  # a wheel deleted or rewritten on the host
    assert kinds(diff(wanted, state)) == [("wheelhouse", "wh1")]


def test_the_script_reads_a_host_and_an_upload_stamp_matches_its_file(tmp_path: Path) -> None:
    layout = HostLayout(str(tmp_path / "opt"))
    for folder in (layout.stamps, layout.models, layout.wheelhouse):
        Path(folder).mkdir(parents=True)
    model = Path(layout.model_path("m"))
    model.write_bytes(b"GGUF" + bytes(1000))
    (Path(layout.wheelhouse) / "a-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (Path(layout.prefix) / "release.json").write_text("{}\n")
    (Path(layout.models) / ".m.gguf.rbee-tmp-0badf00d").write_bytes(b"half")
    Path(layout.stamps, "runtime").write_text("wh1\n")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    run_script(upload_stamp_command(str(model), sha, upload_stamp(layout, str(model))))

    state = parse_state(run_script(state_script(layout, "root")))
    assert state.complete and state.stamps["runtime"] == "wh1"
    assert state.files[f"{layout.prefix}/release.json"].sha256 == hashlib.sha256(b"{}\n").hexdigest()
    assert state.files[f"{layout.prefix}/release.json"].meta.same_mode("644")
    assert state.uploads[str(model)].sha256 == sha and state.uploads[str(model)].matches(state.big[str(model)])
    assert state.leftovers == (f"{layout.models}/.m.gguf.rbee-tmp-0badf00d",)
    assert state.leftover_sizes == {f"{layout.models}/.m.gguf.rbee-tmp-0badf00d": 4}
    assert len(state.wheelhouse_listing) == 64 and {"user", "group"} <= state.account
    assert state.dirs[layout.stamps].user == "root"

    model.write_bytes(b"GGUF" + bytes(999) + b"x")  # rewritten in place: same size, another mtime or same inode
    replaced = tmp_path / "other"
    replaced.write_bytes(model.read_bytes())
    replaced.rename(model)  # another inode
    again = parse_state(run_script(state_script(layout, "root")))
    assert not again.uploads[str(model)].matches(again.big[str(model)])
    (Path(layout.wheelhouse) / "b-1.0-py3-none-any.whl").write_bytes(b"wheel")
    assert again.wheelhouse_listing != parse_state(run_script(state_script(layout, "root"))).wheelhouse_listing


def test_systemd_units_as_systemctl_show_prints_them() -> None:
    output = (
        "unit Id=rbee-hive.service\nunit ActiveState=active\nunit UnitFileState=enabled\nunit NeedDaemonReload=no\n"
        "unit \nunit NeedDaemonReload=yes\nunit Id=rbee-queen.service\nunit ActiveState=failed\n"
        "unit UnitFileState=disabled\nunit \nstate=done\n"
    )
    state = parse_state(output)
    assert state.units == {
        "rbee-hive.service": UnitState(enabled=True, active=True, need_reload=False),
        "rbee-queen.service": UnitState(enabled=False, active=False, need_reload=True),
    }
    assert state.complete


def test_lines_it_cannot_read_count_as_absent() -> None:
    state = parse_state("file abc 644 root root x 1 2 /etc/rbee/hive.yaml\nbig 644\nstamp\nstate=begin\n")
    assert state.files == {} and state.big == {} and not state.complete


def test_an_interrupted_copy_of_wanted_content_is_continued_not_removed(wanted: Wanted) -> None:
    state = deployed(wanted)
    path = "/opt/rbee/models/m.gguf"
    del state.big[path]
    partial, other = resumable_temp(path, MODEL_SHA), "/opt/rbee/models/.m.gguf.rbee-tmp-0badf00d"
    state.leftovers, state.leftover_sizes = (partial, other), {partial: 4096, other: 10}
    changes = diff(wanted, state)
    assert kinds(changes) == [("leftovers", other), ("upload", path)]
    upload = changes.get("upload", path)
    assert upload is not None and upload.resume_from == 4096
    state.big[path] = deployed(wanted).big[path]  # the copy finished meanwhile: its temp is a leftover now
    assert kinds(diff(wanted, state)) == [("leftovers", f"{partial}\n{other}")]


def test_a_file_tail_reads_from_its_offset_as_from_its_start(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.write_bytes(bytes(range(256)) * 4)
    tail = FileTail(str(source), 1000)
    assert tail.read() == source.read_bytes()[1000:]
    tail.seek(0)
    assert tail.tell() == 0 and tail.read(10) == source.read_bytes()[1000:1010]
    tail.close()


COMMANDS = ("stat", "sha256sum", "shasum", "awk", "cut", "head", "tr", "find", "id", "getent", "sed", "ls", "dirname",
            "systemctl", "dscl", "launchctl", "grep", "cat")  # fmt: skip


def counted_run(script: str, shims: Path, log: Path) -> int:
    """Run ``script`` with every command it may call behind a shim that logs it; the number of commands run."""
    shims.mkdir(exist_ok=True)
    for name in COMMANDS:
        real = shutil.which(name)
        if real:
            shim = shims / name
            shim.write_text(f'#!/bin/sh\necho {name} >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
            shim.chmod(0o755)
    log.write_text("")
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, timeout=30, env=env)
    return len(log.read_text().split())


def test_the_script_runs_a_few_commands_whatever_the_number_of_files(tmp_path: Path) -> None:
    """One process per file made the preflight cost hundreds of forks per host: the count must not grow."""
    layout = HostLayout(str(tmp_path / "opt"))
    for folder in (layout.stamps, layout.models, layout.wheelhouse):
        Path(folder).mkdir(parents=True)

    def add(first: int, last: int) -> None:
        for i in range(first, last):
            (Path(layout.wheelhouse) / f"w{i}-1.0-py3-none-any.whl").write_bytes(b"wheel")
            Path(layout.stamps, f"service-{i}").write_text(f"{i}\n")
            Path(layout.models, f"m{i}.gguf").write_bytes(b"GGUF")

    add(0, 2)
    few = counted_run(state_script(layout, "root"), tmp_path / "shims", tmp_path / "log")
    state = parse_state(run_script(state_script(layout, "root")))
    assert len(state.big) == 2 and state.stamps["service-1"] == "1"
    add(2, 40)
    many = counted_run(state_script(layout, "root"), tmp_path / "shims", tmp_path / "log")
    state = parse_state(run_script(state_script(layout, "root")))
    assert len(state.big) == 40 and state.stamps["service-39"] == "39" and state.complete
    assert few == many <= 15
