"""The Ansible inventory of a spec, and the control-side decisions the roles rely on (fast, no hosts)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rbee.cli.ansible_cmd import helpers
from rbee.deploy.ansible_inventory import CLUSTER_VARS, ansible_inventory, connection_vars, host_vars
from rbee.deploy.ansible_steps import plan_hosts, wheel_sync
from rbee.deploy.layout import API_KEYS_FILE
from rbee.deploy.probe import parse_probe
from rbee.spec import load_spec
from rbee.spec.inventory import inventory_groups

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "inventory" / "cluster.example.yaml"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
runner = CliRunner()


class AnsibleYaml(yaml.SafeLoader):
    """Reads the inventory as Ansible does: ``!unsafe`` strings are plain strings (never templated)."""


AnsibleYaml.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def plain(value: Any) -> Any:
    """``ansible-inventory --list`` output with its ``{"__ansible_unsafe": s}`` wrappers unwrapped to ``s``."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return [plain(v) for v in value] if isinstance(value, list) else value


PROBE = """os=Linux
arch=x86_64
kernel=6.1.0
distro=debian 12
python=3.11.2
python_venv=yes
ram_total_kb=8000000
ram_available_kb=6000000
disk_free_kb=50000000
systemd=yes
probe=done
"""


def _inventory(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "inventory.yml"
    result = runner.invoke(helpers, ["inventory", str(EXAMPLE), "--output", str(out)])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = yaml.load(out.read_text(), Loader=AnsibleYaml)
    return data


def test_groups_queen_and_hives_with_cluster_wide_vars_once(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)["all"]
    assert set(inventory["children"]) == {"queen", "hives"}
    assert list(inventory["children"]["queen"]["hosts"]) == ["blep"]
    assert list(inventory["children"]["hives"]["hosts"]) == ["blep", "workstation", "mac-mini"]
    assert set(inventory["vars"]) == {*CLUSTER_VARS, "rbee_spec_file", "rbee_spec_sha256"}
    assert inventory["vars"]["rbee_spec_file"] == str(EXAMPLE.resolve())
    assert inventory["vars"]["rbee_spec_sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert inventory["vars"]["rbee_deploy"]["prefix"] == "/opt/rbee"
    for host in inventory["children"]["hives"]["hosts"].values():
        assert not set(CLUSTER_VARS) & set(host)


def test_both_inventories_name_the_same_hosts_roles_and_spec(tmp_path: Path) -> None:
    """pyinfra's data (connection, host, roles, spec file) agrees with the Ansible inventory's."""
    inventory = _inventory(tmp_path)["all"]
    spec = load_spec(EXAMPLE)
    for _, data in inventory_groups(spec, EXAMPLE)["hives"]:
        mine = {**inventory["vars"], **inventory["children"]["hives"]["hosts"][data["rbee_host"]]}
        assert mine["rbee_roles"] == data["rbee_roles"] and mine["rbee_spec_file"] == data["rbee_spec_file"]
        assert mine == {**mine, **connection_vars(data)}
        cluster_wide = ("rbee_spec_file", "rbee_spec_sha256")
        rbee = {k: v for k, v in mine.items() if k.startswith("rbee_") and k not in cluster_wide}
        assert rbee == host_vars(spec, spec.host(data["rbee_host"]))


def test_connection_vars_from_the_ssh_settings(tmp_path: Path) -> None:
    hosts = _inventory(tmp_path)["all"]["children"]["hives"]["hosts"]
    assert hosts["blep"]["ansible_host"] == "192.168.1.10" and hosts["blep"]["ansible_user"] == "root"
    assert hosts["blep"]["ansible_become"] is False and hosts["blep"]["ansible_port"] == 22
    assert hosts["blep"]["ansible_ssh_private_key_file"] == str(Path("~/.ssh/id_ed25519").expanduser())
    assert hosts["workstation"]["ansible_user"] == "deploy" and hosts["workstation"]["ansible_become"] is True
    assert "ansible_ssh_private_key_file" not in hosts["mac-mini"]


def test_known_hosts_and_localhost() -> None:
    base = {"ssh_hostname": "10.0.0.1", "ssh_port": 2222, "ssh_user": "root"}
    assert "ansible_ssh_common_args" not in connection_vars(base)
    checked = connection_vars({**base, "ssh_known_hosts_file": "/etc/rbee/known_hosts"})
    assert checked["ansible_ssh_common_args"] == "-o UserKnownHostsFile=/etc/rbee/known_hosts"
    unchecked = connection_vars({**base, "ssh_known_hosts_file": "/dev/null"})
    assert "StrictHostKeyChecking=no" in unchecked["ansible_ssh_common_args"]
    assert connection_vars({})["ansible_connection"] == "local"


def test_local_host_gets_a_local_connection(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("cluster: home\nhosts:\n  - {name: box, address: localhost}\n")
    box = ansible_inventory(load_spec(spec), spec)["all"]["children"]["hives"]["hosts"]["box"]
    assert box["ansible_connection"] == "local" and "ansible_host" not in box
    assert box["rbee_roles"] == ["queen", "hive"]


def test_an_invalid_spec_is_refused_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster: lab\nhosts:\n  - {name: a, address: x, backend: gpu}\n")
    result = runner.invoke(helpers, ["inventory", str(bad)])
    assert result.exit_code == 2
    assert "hosts[0].backend: must be one of" in result.output


@pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="ansible-core is not installed in this venv")
def test_ansible_reads_the_inventory(tmp_path: Path) -> None:
    """ansible-inventory itself parses the file: groups and merged host vars are what the roles read."""
    path = tmp_path / "inventory.yml"
    runner.invoke(helpers, ["inventory", str(EXAMPLE), "-o", str(path)])
    listed = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"], capture_output=True, text=True, check=True
    )
    data = plain(json.loads(listed.stdout))
    assert data["queen"]["hosts"] == ["blep"]
    assert sorted(data["hives"]["hosts"]) == ["blep", "mac-mini", "workstation"]
    ws = data["_meta"]["hostvars"]["workstation"]
    assert ws["rbee_deploy"]["llama_cpp_python"] == "0.3.36" and ws["rbee_gpus"] == [0, 1]
    assert ws["rbee_placements"] == [{"model_id": "tinyllama", "slots": 2, "device": "auto"}]


SPEC = """cluster: t
hosts:
  - {name: a, address: 10.0.0.1}
  - {name: b, address: 10.0.0.2, gpus: [1]}
models:
  - {id: m, source: 'file:///m.gguf', context: 1024}
  - {id: n, source: 'file:///n.gguf', context: 4096}
placements:
  - {model: m, hosts: [b], slots: 2}
  - {model: n, hosts: [b]}
"""


def _plan(tmp_path: Path, name: str, probe: str = PROBE) -> dict[str, Any]:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC)
    plan: dict[str, Any] = plan_hosts(str(spec_file), {name: {"probe": probe}})["hosts"][name]
    return plan


def test_host_plan_workers_engine_and_verdict(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "b")
    assert plan["problems"] == [] and plan["line"].endswith("ok")
    assert plan["backend"] == "cpu" and plan["gpu_indices"] == [1]
    assert (
        plan["engine"]["key"].startswith("0.3.36-cpu-linux_x86_64-py3.11-") and plan["engine"]["gpu_offload"] is False
    )
    assert plan["wheelhouse"] == {
        "key": "py3.11-x86_64",
        "python": "3.11",
        "os": "linux",
        "arch": "x86_64",
        "macos": "",
        "extras": (),
    }
    assert [(w["name"], w["port"], w["slots"], w["ctx_size"]) for w in plan["workers"]] == [
        ("m-1", 7840, 2, 1024),
        ("n-1", 7841, 1, 4096),
    ]
    assert plan["workers"][0]["unit"] == "rbee-worker@m-1.service" and plan["workers"][0]["worker_id"] == "b-m-1"
    assert [f["label"] for f in plan["files"]] == [
        "hive credential", "worker credential", "hive config", "unit rbee-hive.service", "unit rbee-worker@.service",
        "worker m-1 config", "worker n-1 config",
    ]  # fmt: skip
    assert [f["label"] for f in plan["files"] if f["secret"]] == ["hive credential", "worker credential"]
    (hive_file,) = [f for f in plan["files"] if f["label"] == "hive config"]
    hive = yaml.safe_load(hive_file["text"])
    assert [m["local_path"] for m in hive["models"]] == ["/opt/rbee/models/m.gguf", "/opt/rbee/models/n.gguf"]
    assert hive["ctx_size"] == 4096 and hive["worker_port_first"] == 7842 and hive["host"] == "10.0.0.2"


def test_host_plan_names_the_problems(tmp_path: Path) -> None:
    probe = PROBE.replace("python=3.11.2", "python=3.9.2").replace("systemd=yes", "systemd=no")
    plan = _plan(tmp_path, "a", probe.replace("ram_total_kb=8000000", "ram_total_kb=400000"))
    text = "; ".join(plan["problems"])
    assert "python3 is 3.9.2; rbee needs >= 3.11" in text
    assert "systemd is not running" in text and "RAM 0.4 GiB < 0.5 GiB" in text
    assert "FAILED: " in plan["line"]


def test_the_queens_keys_are_a_secret_file_of_its_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text("cluster: t\nqueen: {api_keys: {env: T_KEYS}}\nhosts:\n  - {name: a, address: 10.0.0.1}\n")
    monkeypatch.setenv("T_KEYS", "sk-1, sk-2")
    files = plan_hosts(str(spec_file), {"a": {"probe": PROBE}})["hosts"]["a"]["files"]
    (keys,) = [f for f in files if f["label"] == "queen API keys"]
    assert {k: keys[k] for k in ("path", "text", "mode", "secret")} == {
        "path": API_KEYS_FILE, "text": "sk-1\nsk-2\n", "mode": "600", "secret": True,
    }  # fmt: skip
    monkeypatch.setenv("T_KEYS", " ")
    payload = json.dumps({"spec": str(spec_file), "hosts": {"a": {"probe": PROBE}}})
    result = runner.invoke(helpers, ["plan"], input=payload)
    assert result.exit_code == 1 and "queen.api_keys: the environment variable T_KEYS holds no key" in result.output


def test_the_helpers_speak_json(tmp_path: Path) -> None:
    """The role helpers read JSON on stdin and print JSON (here: probe and plan, as the preflight role calls them)."""
    script = runner.invoke(helpers, ["probe"])
    assert "probe=done" in json.loads(script.output)["script"]
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC)
    payload = json.dumps({"spec": str(spec_file), "hosts": {"b": {"probe": PROBE}}})
    result = runner.invoke(helpers, ["plan"], input=payload)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["hosts"]["b"]["workers"][0]["name"] == "m-1"


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh")
def test_the_probe_script_runs_here() -> None:
    script = json.loads(runner.invoke(helpers, ["probe"]).output)["script"]
    facts = parse_probe(subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout)
    assert facts.complete and facts.os == "Linux"


def test_models_helper_gives_the_cached_paths(tmp_path: Path, tiny_model_path: Path) -> None:
    models = [{"id": "tiny", "source": f"file://{tiny_model_path}", "sha256": None, "context": 512}]
    payload = json.dumps({"models": models + models, "cache": str(tmp_path / "cache")})
    first = json.loads(runner.invoke(helpers, ["models"], input=payload).output)
    assert first["changed"] is True and Path(first["models"]["tiny"]["path"]).read_bytes()[:4] == b"GGUF"
    again = json.loads(runner.invoke(helpers, ["models"], input=payload).output)
    assert again["changed"] is False and again["models"] == first["models"]


def test_engine_helper_explains_a_wheel_it_cannot_build(tmp_path: Path) -> None:
    features = [{"backend": "cuda", "arch": "x86_64", "python": "3.11", "version": "0.3.36"}]
    payload = json.dumps({"features": features, "cache": str(tmp_path), "build": True})
    result = json.loads(runner.invoke(helpers, ["engine"], input=payload).output)
    (entry,) = result["engines"].values()
    assert entry["wheel"] is None and "no host of that feature set to build it on" in entry["problem"]
    assert result["changed"] is False


def test_wheel_sync_packs_only_what_a_host_lacks(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    for name in ("a-1-py3-none-any.whl", "b-1-py3-none-any.whl"):
        (house / name).write_bytes(name.encode())
    (house / ".deps").write_text("not a wheel")
    sha1 = hashlib.sha1(b"a-1-py3-none-any.whl", usedforsecurity=False).hexdigest()
    there = [
        {"path": "/opt/rbee/wheelhouse/a-1-py3-none-any.whl", "checksum": sha1},
        {"path": "/opt/rbee/wheelhouse/old-0-py3-none-any.whl", "checksum": "x"},
    ]
    result = wheel_sync(str(house), there, packs=tmp_path / "packs")
    assert result["needed"] == ["b-1-py3-none-any.whl"] and result["extra"] == ["old-0-py3-none-any.whl"]
    with tarfile.open(result["tar"]) as archive:
        (member,) = archive.getmembers()
        assert member.name == "b-1-py3-none-any.whl" and member.mode == 0o644 and member.uid == 0
    assert wheel_sync(str(house), there, packs=tmp_path / "packs")["tar"] == result["tar"]
    synced = [
        *there[:1],
        {"path": "/w/b-1-py3-none-any.whl", "checksum": hashlib.sha1(b"b-1-py3-none-any.whl").hexdigest()},
    ]
    assert wheel_sync(str(house), synced, packs=tmp_path / "packs") == {"needed": [], "extra": [], "tar": None}
