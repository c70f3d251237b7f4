"""The pyinfra translation of a macOS host's plan, generated without a Mac: no systemd operation.

The deploy's steps act on the diff of the plan against the host's state (``rbee.deploy.host_state``,
read by the preflight); here the state is made by the test (``HostState``) instead of read from a host,
pyinfra's own facts get their defaults (a bare host), and the commands the runtime and services steps
would run are listed (``generate``) — what ``pyinfra --dry`` computes, without connecting anywhere. The dscl script that
makes the service account runs for real against a stand-in ``dscl`` (``fake_dscl``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyinfra.api.host as pyinfra_host
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.context import ctx_host, ctx_state

from rbee.deploy.host_diff import Changes, RunInputs, diff, wanted_state
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.host_state import HostState, Meta, RemoteFile
from rbee.deploy.macos import service_account_script
from rbee.deploy.probe import parse_probe
from rbee.deploy.wheelhouse import Wheelhouse
from rbee.deploys import control_engine, control_run
from rbee.deploys.runtime import runtime
from rbee.deploys.services import services
from rbee.spec import parse_spec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "macos"
LINUX_PROBE = "os=Linux\narch=x86_64\nglibc=2.36\npython=3.11.2\npython_venv=yes\nsystemd=yes\nprobe=done\n"
SPEC = """cluster: t
queen: {host: mini}
hosts:
  - {name: mini, address: 10.0.0.5}
models:
  - {id: m, source: 'file:///m.gguf', context: 1024}
placements:
  - {model: m, hosts: [mini], slots: 2}
"""
SHA = {"m": "sha-m"}
PLIST = Meta("644", "root", "wheel")


def plan(probe: str) -> HostPlan:
    return plan_deployed_host(parse_spec(SPEC, "cluster.yaml"), "mini", parse_probe(probe), {"m": 2**20}, "sk-1\n")


def mac_plan() -> HostPlan:
    return plan((FIXTURES / "m2-pro-probe.txt").read_text())


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime step's wheelhouse, without building one (pip download is not what is tested)."""
    wheel = tmp_path / "rbee-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a wheel")
    monkeypatch.setattr(control_engine, "wheelhouse", lambda features: Wheelhouse(tmp_path, wheel))


def changes_of(p: HostPlan, found: HostState) -> Changes:
    """The diff the deploy acts on, for ``p`` on a host in state ``found`` (release ``r1``, models ``SHA``)."""
    inputs = RunInputs("wheels", None, None, SHA, "r1", SHA, "{}")
    return diff(wanted_state(p, inputs), found)


def generate(
    monkeypatch: pytest.MonkeyPatch, found: HostState, deploy: Callable[..., Any], p: HostPlan, *args: Any
) -> list[tuple[str, list[str]]]:
    """Every operation the deploy function adds for host ``mini`` in state ``found``, with the commands it would run."""

    def get_fact(state: State, host: Any, cls: type, args: Any = None, kwargs: Any = None, **_: Any) -> Any:
        default = getattr(cls, "default", None)
        return default() if default else None

    monkeypatch.setattr(pyinfra_host, "get_fact", get_fact)
    monkeypatch.setitem(control_run._states, "mini", found)
    inventory = Inventory((["mini"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("mini")
    state.activate_host(host)
    add_deploy(state, deploy, p, changes_of(p, found), *args)
    out = []
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in state.get_op_order():
            data = state.get_op_data_for_host(host, op_hash)
            (name,) = state.get_op_meta(op_hash).names
            out.append((name, [str(c) for c in data.command_generator()]))
    return out


def commands(ops: list[tuple[str, list[str]]]) -> list[str]:
    return [c for _, cs in ops for c in cs]


SYSTEMD_WORDS = ("systemctl", "daemon-reload", "/etc/systemd", ".service", "useradd", "groupadd", "nologin")


def test_the_harness_sees_systemd_operations_on_a_linux_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    linux = commands(generate(monkeypatch, HostState(), services, plan(LINUX_PROBE), "r1", SHA))
    assert any("systemctl" in c for c in linux) and any("rbee-hive.service" in c for c in linux)


def test_a_mac_deploy_issues_no_systemd_operation(monkeypatch: pytest.MonkeyPatch, wheelhouse: None) -> None:
    mac = mac_plan()
    stale = HostState(files={"/Library/LaunchDaemons/org.rbee.worker.gone-1.plist": RemoteFile("0" * 64, PLIST)})
    ops = [*generate(monkeypatch, HostState(), runtime, mac), *generate(monkeypatch, stale, services, mac, "r1", SHA)]
    every = commands(ops)
    assert not [c for c in every if any(word in c for word in SYSTEMD_WORDS)]
    names = [name for name, _ in ops]
    assert "rbee runtime | runtime: service user rbee (dscl)" in names
    assert not any("group rbee" in n for n in names)  # pyinfra's server.group/server.user are Linux only
    assert any(c.startswith("set -e\nused=$(") and "dscl . -create /Users/rbee" in c for c in every)
    assert "mkdir -p /usr/local/var/rbee/logs" in every and "chown rbee:rbee /usr/local/var/rbee/logs" in every
    for label in ("org.rbee.queen", "org.rbee.hive", "org.rbee.worker.m-1"):
        (daemon,) = [
            cs for name, cs in ops if name == f"rbee services | services: {label} loaded and running its inputs"
        ]
        plist = f"/Library/LaunchDaemons/{label}.plist"
        assert daemon[-3:-1] == [f"launchctl enable system/{label}", f"launchctl bootstrap system {plist}"]
        # atomically: uploaded beside it, owner and mode set there, then renamed over it
        temp = f"/Library/LaunchDaemons/.{label}.plist.rbee-tmp-"
        assert any("FileUploadCommand(" in c and f", {temp}" in c for c in daemon), daemon
        (moved,) = [c for c in daemon if f"mv -f {temp}" in c]  # one command after the transfer
        assert moved.startswith(f"chown root:wheel {temp}") and f" && chmod 644 {temp}" in moved
        assert f" {plist} && " in moved.split(f"mv -f {temp}", 1)[1]
        assert daemon[-1].startswith("mkdir -p /opt/rbee/stamps && printf") and f"service-{label}" in daemon[-1]
    (gone,) = [cs for name, cs in ops if name.endswith("remove worker gone-1 (no longer placed)")]
    assert gone[0].startswith("launchctl bootout system/org.rbee.worker.gone-1") and gone[1].startswith("rm -f ")


def current_host(p: HostPlan, stamps: dict[str, str], state: str = "running") -> HostState:
    """The state of a Mac that already runs ``p`` (``stamps``: what each daemon last started from)."""
    files = {
        f.path: RemoteFile(hashlib.sha256(f.text.encode()).hexdigest(), Meta(f.mode, f.owner, f.group or "rbee"))
        for f in p.files
    }
    return HostState(files=files, stamps=stamps, launchd={s.unit: state for s in p.services},
                     account=frozenset({"user", "group"}))  # fmt: skip


def digests(p: HostPlan) -> dict[str, str]:
    return {f"service-{s.unit}": s.digest("r1", SHA) for s in p.services}


def daemon_commands(ops: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    prefix = "rbee services | services: "
    return {name.removeprefix(prefix).split()[0]: cs for name, cs in ops if "loaded and running" in name}


def test_a_second_run_touches_no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    p = mac_plan()
    ops = generate(monkeypatch, current_host(p, digests(p)), services, p, "r1", SHA)
    assert ops == []  # not an operation: the diff found nothing to do
    assert commands(generate(monkeypatch, current_host(p, digests(p), state="loaded"), services, p, "r1", SHA)) == [
        f"launchctl kickstart system/{s.unit}" for s in p.services
    ]


def test_a_changed_digest_kickstarts_only_that_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    p = mac_plan()
    stamps = {**digests(p), "service-org.rbee.hive": "an-older-digest"}
    ops = daemon_commands(generate(monkeypatch, current_host(p, stamps), services, p, "r1", SHA))
    assert list(ops) == ["org.rbee.hive"]
    assert ops["org.rbee.hive"][0] == "launchctl kickstart -k system/org.rbee.hive"
    assert "service-org.rbee.hive" in ops["org.rbee.hive"][1] and len(ops["org.rbee.hive"]) == 2


def test_a_changed_plist_is_booted_out_before_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    p = mac_plan()
    found = current_host(p, digests(p))
    found.files["/Library/LaunchDaemons/org.rbee.hive.plist"] = RemoteFile("0" * 64, PLIST)
    ops = daemon_commands(generate(monkeypatch, found, services, p, "r1", SHA))
    hive = ops["org.rbee.hive"]
    upload = next(i for i, c in enumerate(hive) if c.startswith("FileUploadCommand("))
    assert hive[0].startswith("launchctl bootout system/org.rbee.hive") and upload > 0
    assert hive[upload + 1 :][-3:-1] == [
        "launchctl enable system/org.rbee.hive",
        "launchctl bootstrap system /Library/LaunchDaemons/org.rbee.hive.plist",
    ]
    assert list(ops) == ["org.rbee.hive"]


FAKE_DSCL = r"""
import json, os, sys
db_path = os.environ["FAKE_DSCL_DB"]
START = {"/Users/root": {"UniqueID": "0"}, "/Users/_www": {"UniqueID": "70"},
         "/Groups/wheel": {"PrimaryGroupID": "0"}, "/Groups/_taken": {"PrimaryGroupID": "300"}}
db = json.load(open(db_path)) if os.path.exists(db_path) else START
with open(db_path + ".log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
_, node, verb, path, *rest = sys.argv
if verb == "-list":
    key = rest[0]
    for record, attrs in sorted(db.items()):
        if record.startswith(path + "/") and key in attrs:
            print(record.rsplit("/", 1)[1], attrs[key])
elif verb == "-read":
    if path not in db or (rest and rest[0] not in db[path]):
        sys.exit(56)
    for key in rest or db[path]:
        print(f"{key}: {db[path][key]}")
elif verb == "-create":
    db.setdefault(path, {})
    if rest:
        db[path][rest[0]] = " ".join(rest[1:])
    json.dump(db, open(db_path, "w"))
"""


@pytest.fixture
def fake_dscl(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A ``dscl`` that keeps its directory in a JSON file (the subset rbee's script uses)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dscl").write_text(f"#!{sys.executable}\n{FAKE_DSCL}")
    (bin_dir / "dscl").chmod(0o755)
    yield {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DSCL_DB": str(tmp_path / "db.json")}


def test_the_service_account_script_makes_a_hidden_user_once(fake_dscl: dict[str, str]) -> None:
    script = service_account_script("rbee", "/usr/local/var/rbee")
    subprocess.run(["sh", "-c", script], env=fake_dscl, check=True, timeout=30)
    db = json.loads(Path(fake_dscl["FAKE_DSCL_DB"]).read_text())
    group, user = db["/Groups/rbee"], db["/Users/rbee"]
    assert group["PrimaryGroupID"] == "301"  # 300 is taken
    assert user["UniqueID"] == "302" and user["PrimaryGroupID"] == "301"
    assert user["NFSHomeDirectory"] == "/usr/local/var/rbee" and user["UserShell"] == "/usr/bin/false"
    assert user["IsHidden"] == "1" and user["Password"] == "*"
    log = Path(fake_dscl["FAKE_DSCL_DB"] + ".log")
    creates = log.read_text().count("-create")
    subprocess.run(["sh", "-c", script], env=fake_dscl, check=True, timeout=30)
    assert log.read_text().count("-create") == creates  # a second run creates nothing
