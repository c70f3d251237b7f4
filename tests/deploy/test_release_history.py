"""Release history without hosts: ids, the host program (``rbee.deploy.host_releases``) run on real folders through
the very command a deploy sends (``sh -c``), pruning, rollback targets. The test hosts run it for real in
``test_release_history_hosts.py``; ``systemctl`` is the one thing stood in for here (a script logging its calls).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rbee.deploy import host_releases
from rbee.deploy.host_releases import ReleaseError, Store
from rbee.deploy.layout import HostLayout
from rbee.deploy.release_id import release_id, version_label
from rbee.deploy.release_record import spec_commit
from rbee.deploy.releases import (
    HostReleases,
    ReleaseIdError,
    check_release_id,
    host_command,
    parse_listing,
    restore_command,
)
from rbee.rollout.gate import GateTarget
from rbee.rollout.history import rollback_target
from rbee.rollout.provenance import LocalInputs, compare, local_inputs, status_lines
from rbee.rollout.rolling import release_targets
from rbee.spec import ClusterSpec, SpecError, load_spec

A, B, C = "0.1.0-aaaaaaaaaaaa", "0.1.0-bbbbbbbbbbbb", "0.1.0-cccccccccccc"


class Host:
    """A host's rbee files under ``root`` (prefix, /etc/rbee, units) and a ``systemctl`` that logs its arguments."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.prefix, self.config, self.units = root / "opt/rbee", root / "etc/rbee", root / "units"
        self.log = root / "systemctl.log"
        systemctl = root / "systemctl"
        systemctl.write_text(f'#!/bin/sh\necho "$*" >> {self.log}\n')
        systemctl.chmod(0o755)
        self.paths = {"prefix": str(self.prefix), "models": str(self.prefix / "models"), "config": str(self.config),
                      "units": str(self.units), "systemctl": [str(systemctl)]}  # fmt: skip

    def deploy(self, release: str, slots: int, model: bytes, workers: tuple[str, ...] = ("tiny-1",)) -> None:
        """What a deploy leaves: a venv (pip writes new files), configs, units, stamps, a model (renamed over)."""
        venv = self.prefix / "venv/lib"
        venv.mkdir(parents=True, exist_ok=True)
        fresh = venv / ".rbee.py.new"
        fresh.write_text(f"runtime of {release}\n")
        fresh.replace(venv / "rbee.py")  # a new inode, as pip's install
        (self.prefix / "models").mkdir(exist_ok=True)
        temp = self.prefix / "models/.tiny.gguf.rbee-tmp-1"
        temp.write_bytes(model)
        temp.replace(self.prefix / "models/tiny.gguf")
        (self.config / "workers").mkdir(parents=True, exist_ok=True)
        for env in (self.config / "workers").glob("*.env"):
            env.unlink()
        for worker in workers:
            (self.config / "workers" / f"{worker}.env").write_text(f"SLOTS={slots}\n")
        (self.config / "hive.yaml").write_text("port: 7835\n")
        self.units.mkdir(exist_ok=True)
        (self.units / "rbee-hive.service").write_text("[Service]\n")
        (self.units / "rbee-worker@.service").write_text(f"[Service]\n# {release}\n")
        os.chown(self.units / "rbee-worker@.service", os.getuid(), 1)  # root:<service group> on a host
        (self.units / "other.service").write_text("not rbee's\n")
        stamps = self.prefix / "stamps"
        stamps.mkdir(exist_ok=True)
        for old in stamps.glob("service-rbee-worker@*"):
            old.unlink()
        (stamps / "runtime").write_text(f"{release}\n")
        (stamps / "service-rbee-hive.service").write_text("hive\n")
        for worker in workers:
            (stamps / f"service-rbee-worker@{worker}.service").write_text(f"{release}\n")

    def run(self, action: str, **args: Any) -> dict[str, Any]:
        """The command a deploy sends (``host_command``), run by ``sh``; its JSON answer."""
        command = host_command(action, {"paths": self.paths, **args})
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ReleaseError(done.stderr.strip())
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    def keep(self, release: str, keep: int = 5) -> dict[str, Any]:
        return self.run("keep", release=release, record=record(release), keep=keep, origin=origin(release))

    def calls(self) -> list[str]:
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return calls

    def store(self) -> Store:
        return Store(self.paths)


def record(release: str) -> str:
    return json.dumps({"release": release, "models": {"tiny": "sha-of-" + release}, "rbee_version": "0.1.0"}) + "\n"


def origin(release: str) -> dict[str, Any]:
    return {"rbee_commit": "", "spec_commit": f"commit-of-{release}", "spec_dirty": False}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.mark.parametrize("good", [A, "0.2.0.dev3-0123456789ab", "adopted-0123456789ab", "v1-000000000000"])
def test_a_release_id_is_a_version_and_twelve_hex_digits(good: str) -> None:
    assert check_release_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "current", "previous", "../0.1.0-aaaaaaaaaaaa", "0.1.0-aaaaaaaaaaaa/..", "0.1.0-AAAAAAAAAAAA", "0.1.0-aaa",
     "0.1.0-aaaaaaaaaaaa\n", "-aaaaaaaaaaaa", ".x-aaaaaaaaaaaa", "a;b-aaaaaaaaaaaa", "0.1.0-aaaaaaaaaaaa; rm -rf /",
     "x" * 41 + "-aaaaaaaaaaaa", "$(id)-aaaaaaaaaaaa"],
)  # fmt: skip
def test_anything_else_is_refused_before_a_command_is_made(bad: str) -> None:
    with pytest.raises(ReleaseIdError, match="not a release id"):
        check_release_id(bad)
    with pytest.raises(ReleaseIdError):
        restore_command(HostLayout("/opt/rbee"), bad)
    with pytest.raises(ReleaseError, match="not a release id"):
        Store({"prefix": "/nonexistent", "models": "/n", "config": "/n", "units": "/n"}).path(bad)


def test_a_version_becomes_the_ids_first_part() -> None:
    assert version_label("0.1.0") == "0.1.0"
    assert version_label("0.2.0.dev3+g1a2b3c") == "0.2.0.dev3.g1a2b3c"
    assert version_label("+local") == "vlocal"
    assert check_release_id(f"{version_label('1.0.0rc1+' + 'x' * 60)}-{'0' * 12}")


def test_the_id_is_the_same_for_the_same_inputs_and_changes_with_each(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ClusterSpec.model_validate({
        "cluster": "c", "hosts": [{"name": "h1", "address": "10.0.0.1"}],
        "models": [{"id": "tiny", "source": "file:///m/tiny.gguf"}], "placements": [{"model": "tiny", "hosts": ["h1"]}],
    })  # fmt: skip
    monkeypatch.setenv("RBEE_CLUSTER_SECRET", "ab" * 32)
    first = release_id(spec, "11" * 32, Path("/spec"), lambda m: "cd" * 32)
    assert check_release_id(first) and first == release_id(spec, "11" * 32, Path("/spec"), lambda m: "cd" * 32)
    assert release_id(spec, "22" * 32, Path("/spec"), lambda m: "cd" * 32) != first  # the spec file
    assert release_id(spec, "11" * 32, Path("/spec"), lambda m: "ef" * 32) != first  # a model's bytes
    pinned = spec.model_copy(update={"models": [spec.models[0].model_copy(update={"sha256": "cd" * 32})]})
    assert release_id(pinned, "11" * 32, Path("/spec"), lambda m: None) == first, (
        "a model not fetched yet (a cold cache) counts by the sha256 the spec pins, which the fetch verifies")
    assert release_id(spec, "11" * 32, Path("/spec"), lambda m: None) != first  # not pinned: by its source
    monkeypatch.setenv("RBEE_CLUSTER_SECRET", "cd" * 32)
    assert release_id(spec, "11" * 32, Path("/spec"), lambda m: "cd" * 32) != first  # a rotated secret


def test_keeping_a_release_links_the_venv_and_models_and_copies_the_rest(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    answer = host.keep(A)
    assert answer == {"kept": A, "pruned": []}
    kept = host.prefix / "releases" / A
    assert (kept / "venv/lib/rbee.py").stat().st_ino == (host.prefix / "venv/lib/rbee.py").stat().st_ino
    assert (host.prefix / "models/.rbee-releases" / A / "tiny.gguf").samefile(host.prefix / "models/tiny.gguf")
    assert (kept / "etc/workers/tiny-1.env").read_text() == "SLOTS=2\n"
    assert sorted(p.name for p in (kept / "units").iterdir()) == ["rbee-hive.service", "rbee-worker@.service"]
    assert (kept / "stamps/release").read_text() == f"{A}\n" == (host.prefix / "stamps/release").read_text()
    assert (kept / "release.json").read_text() == record(A) == (host.prefix / "release.json").read_text()
    assert json.loads((kept / "provenance.json").read_text()) == origin(A)
    assert (host.prefix / "provenance.json").read_text() == (kept / "provenance.json").read_text()
    assert str((host.prefix / "releases/current").readlink()) == A
    assert oct((host.prefix / "releases").stat().st_mode & 0o777) == "0o700"
    listed = parse_listing(json.dumps(host.run("list")))
    assert listed.current == A and [r.id for r in listed.releases] == [A] and listed.releases[0].workers == ("tiny-1",)
    assert listed.releases[0].came_from("spec_commit") == f"commit-of-{A}"
    assert not [p for p in (host.prefix / "releases").iterdir() if ".rbee-tmp-" in p.name]


def test_a_release_kept_again_keeps_the_commits_that_made_it_and_an_older_record_still_names_its_own(
    host: Host,
) -> None:
    """A commit that changes neither the spec nor rbee makes the same release: the record is unchanged, so no keep
    runs and ``provenance.json`` still names the commit that made the release. An older rbee's release kept its
    commits in the record itself."""
    host.deploy(A, slots=2, model=b"model A")
    host.keep(A)
    legacy = {"release": A, "spec_commit": "c0ffee", "spec_dirty": True, "git_commit": "beef"}
    kept = parse_listing(json.dumps({"releases": [{"id": A, "record": legacy}]})).releases[0]
    assert (kept.came_from("spec_commit"), kept.came_from("spec_dirty"), kept.came_from("rbee_commit")) == (
        "c0ffee", True, "beef")  # fmt: skip
    (host.prefix / "release.json").write_text('{"release": "x"}\n')  # another rbee's record, adopted as it is
    (host.prefix / "stamps/release").unlink()
    adopted = host.run("adopt", keep=5)["kept"]
    assert json.loads((host.prefix / "releases" / adopted / "provenance.json").read_text()) == origin(A)


def test_a_release_keeps_its_bytes_when_the_next_deploy_replaces_files(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    host.keep(A)
    host.deploy(B, slots=3, model=b"model B")
    host.keep(B)
    assert (host.prefix / "releases" / A / "venv/lib/rbee.py").read_text() == f"runtime of {A}\n"
    assert (host.prefix / "models/.rbee-releases" / A / "tiny.gguf").read_bytes() == b"model A"
    assert (host.prefix / "releases" / A / "etc/workers/tiny-1.env").read_text() == "SLOTS=2\n"


def test_only_the_newest_releases_are_kept_and_pruning_frees_their_models(host: Host) -> None:
    for release, slots in ((A, 1), (B, 2), (C, 3)):
        host.deploy(release, slots, model=release.encode())
        answer = host.keep(release, keep=2)
    assert answer["pruned"] == [A]
    assert host.store().recency() == [C, B]
    assert not (host.prefix / "models/.rbee-releases" / A).exists()
    assert host.run("prune", keep=1) == {"pruned": []}, "the release the last switch came from stays (undo target)"
    host.deploy(A, 1, model=b"A again")
    host.keep(A, keep=1)
    assert host.store().ids() == [A, C]  # current + the one it switched from


def test_an_unchanged_release_kept_again_is_replaced_not_added(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    host.keep(A)
    host.keep(A)
    store = host.store()
    assert store.ids() == [A] and [h[1] for h in store.history()] == [A]
    assert store.last_switch() == (A, A)
    assert store.resolve(f"undo:{A}") == A, "a failed rollout of the same id stays on it"


def test_rollback_restores_files_models_and_restarts_only_what_differs(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    host.keep(A)
    model_a = (host.prefix / "models/tiny.gguf").stat().st_ino
    host.deploy(B, slots=3, model=b"model B", workers=("tiny-1", "tiny-2"))
    host.keep(B)
    (host.units / "rbee-extra.service").write_text("B only\n")
    done = host.run("restore", target=A)
    assert done["release"] == A and done["stop"] == ["rbee-worker@tiny-2.service"]
    assert done["restart"] == ["rbee-worker@tiny-1.service"] and done["venv"] and done["models"] == ["tiny"]
    assert host.calls() == [
        "disable --now rbee-worker@tiny-2.service", "daemon-reload",
        "reset-failed rbee-hive.service", "enable --now rbee-hive.service",
        "reset-failed rbee-worker@tiny-1.service", "enable rbee-worker@tiny-1.service",
        "restart rbee-worker@tiny-1.service",
    ]  # fmt: skip
    assert (host.prefix / "venv/lib/rbee.py").read_text() == f"runtime of {A}\n"
    assert (host.prefix / "models/tiny.gguf").read_bytes() == b"model A"
    assert (host.prefix / "models/tiny.gguf").stat().st_ino == model_a, "the kept bytes, not a copy"
    assert sorted(p.name for p in (host.config / "workers").iterdir()) == ["tiny-1.env"]
    assert (host.config / "workers/tiny-1.env").read_text() == "SLOTS=2\n"
    assert not (host.units / "rbee-extra.service").exists() and (host.units / "other.service").exists()
    assert (host.units / "rbee-worker@.service").read_text() == f"[Service]\n# {A}\n"
    assert (host.units / "rbee-worker@.service").stat().st_gid == 1, "the unit's owner, as the deploy left it"
    assert (host.prefix / "release.json").read_text() == record(A)
    assert json.loads((host.prefix / "provenance.json").read_text()) == origin(A), "where A came from, not B"
    stamps = host.prefix / "stamps"
    assert sorted(p.name for p in stamps.iterdir()) == [
        "release", "runtime", "service-rbee-hive.service", "service-rbee-worker@tiny-1.service"]  # fmt: skip
    assert (stamps / "service-rbee-worker@tiny-1.service").read_text() == f"{A}\n"
    assert str((host.prefix / "releases/current").readlink()) == A
    assert [why for *_, why in host.store().history()] == ["deploy", "deploy", "rollback"]
    assert not list(host.root.rglob("*.rbee-tmp-*"))
    again = host.run("restore", target=A)  # nothing differs any more: nothing restarts
    assert again["restart"] == [] and again["stop"] == [] and not again["venv"] and again["models"] == []
    assert host.calls() == [
        "reset-failed rbee-hive.service", "enable --now rbee-hive.service",
        "reset-failed rbee-worker@tiny-1.service", "enable --now rbee-worker@tiny-1.service",
    ]  # fmt: skip


def test_undo_returns_to_the_release_before_the_tried_one_or_stays_when_it_never_switched(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    host.keep(A)
    host.deploy(B, slots=3, model=b"model B")
    store = host.store()
    assert store.resolve(f"undo:{B}") == A, "the deploy of B failed before keeping it: back to A"
    host.keep(B)
    assert store.resolve(f"undo:{B}") == A, "B was kept, then its gate failed: back to A"
    assert host.run("restore", target=f"undo:{B}")["release"] == A
    assert store.current() == A


def test_a_release_the_host_does_not_keep_is_refused_naming_the_kept_ones(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    host.keep(A)
    with pytest.raises(ReleaseError, match=f"release {B} is not kept on this host \\(kept: {A}\\)"):
        host.run("restore", target=B)
    assert host.calls() == [], "nothing was stopped"
    with pytest.raises(ReleaseError, match="no kept release to return to"):
        Host(host.root / "bare").run("restore", target=f"undo:{A}")


def test_a_release_deployed_before_release_history_is_adopted_once(host: Host) -> None:
    host.deploy(A, slots=2, model=b"model A")
    old_record = b'{"spec_sha256": "old"}\n'
    (host.prefix / "release.json").write_bytes(old_record)
    (host.prefix / "releases/previous").mkdir(parents=True)  # the single kept release of older rbee
    answer = host.run("adopt", keep=5)
    adopted = f"adopted-{hashlib.sha256(old_record).hexdigest()[:12]}"
    assert answer["kept"] == adopted and host.store().current() == adopted
    assert not (host.prefix / "releases/previous").exists()
    assert host.run("adopt", keep=5)["kept"] == "", "kept already (the release stamp says so)"
    assert Host(host.root / "bare").run("adopt", keep=5)["kept"] == "", "never deployed: nothing to keep"


def test_a_kept_model_is_put_back_as_its_own_inode_and_a_model_it_lacks_is_left(host: Host) -> None:
    """(Was test_atomic_put's check of the single kept release.)"""
    host.deploy(A, slots=2, model=b"OLD")
    host.keep(A)
    kept_inode = (host.prefix / "models/tiny.gguf").stat().st_ino
    host.deploy(B, slots=2, model=b"NEW")
    (host.prefix / "models/added.gguf").write_bytes(b"added")
    host.run("restore", target=A)
    live = host.prefix / "models/tiny.gguf"
    assert live.read_bytes() == b"OLD" and live.stat().st_ino == kept_inode
    assert (host.prefix / "models/added.gguf").read_bytes() == b"added"
    assert sorted(p.name for p in (host.prefix / "models").iterdir()) == [".rbee-releases", "added.gguf", "tiny.gguf"]


def _listing(current: str, kept: list[tuple[str, int]], history: list[str]) -> HostReleases:
    data = {
        "current": current,
        "releases": [{"id": r, "created": 1.0, "record": {}, "workers": [f"w{i}" for i in range(n)]} for r, n in kept],
        "history": [{"at": float(i), "id": r, "why": "deploy"} for i, r in enumerate(history)],
    }
    return parse_listing(json.dumps(data))


def test_rollback_defaults_to_the_release_before_the_current_one_on_every_host() -> None:
    listings: dict[str, HostReleases | str] = {
        "h1": _listing(C, [(C, 0), (B, 0), (A, 0)], [A, B, C]), "h2": _listing(C, [(C, 1), (A, 2), (B, 1)], [A, B, C]),
    }  # fmt: skip
    assert (rollback_target(listings, None).release, rollback_target(listings, None).problems) == (B, ())
    assert (rollback_target(listings, A).release, rollback_target(listings, A).problems) == (A, ())
    assert release_targets(listings, A, ["h1", "h2"]) == [GateTarget("h1", 0), GateTarget("h2", 2)]
    assert release_targets(listings, None, ["h2"]) == [GateTarget("h2", 1)]  # its current one


def test_rollback_names_each_host_that_lacks_the_release_or_cannot_be_read() -> None:
    listings: dict[str, HostReleases | str] = {
        "h1": _listing(C, [(C, 0), (B, 0)], [B, C]), "h2": "not reached (rbee preflight tells why)",
        "h3": _listing(B, [(B, 1)], [B]),
    }  # fmt: skip
    target = rollback_target(listings, A)
    assert target.problems == (
        "h2: not reached (rbee preflight tells why)", f"h1: release {A} is not kept there (kept: {C}, {B})",
        f"h3: release {A} is not kept there (kept: {B})",
    )  # fmt: skip
    split: dict[str, HostReleases | str] = {
        "h1": _listing(C, [(C, 0), (B, 0)], [B, C]), "h3": _listing(B, [(B, 1), (A, 1)], [A, B]),
    }  # fmt: skip
    assert rollback_target(split, None).problems == (
        f"no single release ran before the current one on every host (h1: {B}, h3: {A}); name one with --to",
    )
    with pytest.raises(ReleaseIdError):
        rollback_target(listings, "../etc")


def test_the_host_program_runs_on_the_oldest_python_it_claims(host: Host) -> None:
    """Standard library only, no syntax newer than 3.9 at run time (macOS's python3): it must compile as 3.9."""
    import ast

    tree = ast.parse(Path(host_releases.__file__).read_text(), feature_version=(3, 9))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Match)]
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "hashlib", "json", "os", "re", "shutil", "subprocess", "sys", "time", "pathlib",
                        "typing"}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "error"),
    [("0", "greater than or equal to 1"), ("51", "less than or equal to 50"),
     ("'$(id)'", "never templates or commands"), ("2.5", "valid integer")],
)  # fmt: skip
def test_keep_releases_is_a_located_spec_error_outside_1_to_50(tmp_path: Path, value: str, error: str) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"cluster: c\nhosts: [{{name: h1, address: 10.0.0.1}}]\ndeploy: {{keep_releases: {value}}}\n")
    with pytest.raises(SpecError, match=rf"cluster.yaml:3:\d+: deploy.keep_releases: .*{error}"):
        load_spec(spec)
    spec.write_text("cluster: c\nhosts: [{name: h1, address: 10.0.0.1}]\n")
    assert load_spec(spec).deploy.keep_releases == 5


def test_the_spec_commit_and_its_dirty_flag_come_from_the_checkout_holding_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "ops" / "cluster.yaml"
    spec.parent.mkdir()
    spec.write_text("cluster: c\n")
    assert spec_commit(spec) == ("", False), "not in a git work tree"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert spec_commit(spec) == (head, False)
    spec.write_text("cluster: d\n")
    assert spec_commit(spec) == (head, True)


def test_status_compares_a_record_with_the_spec_at_hand() -> None:
    local = LocalInputs("aa" * 32, "c0ffee" * 6, False, "0.2.0", B, {"tiny": "11" * 32, "big": None})
    record = {"spec_sha256": "aa" * 32, "release": B, "rbee_version": "0.2.0", "engine": "cpu-x",
              "models": {"tiny": "11" * 32, "big": "22" * 32}, "engine_wheel_sha256": "33" * 32,
              "origin": {"spec_commit": "feed" * 10, "spec_dirty": False, "rbee_commit": "beef" * 10}}  # fmt: skip
    assert compare(record, local) == {"release": True, "here": B, "differs": []}, (
        "big: not cached here, unknown; the commit that made the release is no difference in what runs")
    lines = status_lines("h1", record, local)
    assert lines[:4] == [
        "h1: this spec, engine cpu-x", f"  release {B}: the spec at hand's",
        f"  made from spec commit {'feed' * 3}, rbee 0.2.0 (commit {'beef' * 3})", f"  engine wheel sha256 {'33' * 8}",
    ]  # fmt: skip
    old = {"spec_sha256": "bb" * 32, "release": A, "rbee_version": "0.1.0", "spec_commit": "c0ffee" * 6,
           "spec_dirty": True, "git_commit": "", "engine": "cpu-x", "models": {"tiny": "44" * 32}}  # an older record
    found = compare(old, local)
    assert not found["release"] and found["differs"] == [
        "spec file", f"spec commit {'c0ffee' * 2} (uncommitted changes), here {'c0ffee' * 2}", "rbee 0.1.0, here 0.2.0",
        f"model tiny {'44' * 6}, here {'11' * 6}",
    ]  # fmt: skip
    assert f"  release {A}: not the spec at hand's ({B})" in status_lines("h1", old, local)
    assert status_lines("h1", old, local)[0] == "h1: ANOTHER spec (drift: run rbee plan), engine cpu-x"
    assert f"  made from spec commit {'c0ffee' * 2} (uncommitted changes), rbee 0.1.0 (commit -)" in status_lines(
        "h1", old, local)  # fmt: skip


def test_status_without_a_usable_cluster_secret_says_the_release_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("cluster: c\nhosts: [{name: h1, address: 10.0.0.1}]\n")
    monkeypatch.setenv("RBEE_CLUSTER_SECRET", "not-a-secret")
    local = local_inputs(load_spec(spec), spec)
    assert local.release.startswith("(unknown: $RBEE_CLUSTER_SECRET")
    monkeypatch.setenv("RBEE_CLUSTER_SECRET", "ab" * 32)
    assert check_release_id(local_inputs(load_spec(spec), spec).release)
