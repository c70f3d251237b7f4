"""The ``rbee.cluster`` collection without hosts: built, installed, its inventory plugin read by Ansible, linted.

The collection is built from ``ansible_collections/rbee/cluster`` with ``ansible-galaxy collection
build`` and installed with ``ansible-galaxy collection install`` into a temp collections path once per
module; every Ansible run here uses only that copy (no ansible.cfg, ``ANSIBLE_COLLECTIONS_PATH`` = the
temp path). Skipped when ansible-core is not installed in the venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ansible_collections.rbee.cluster.plugins.plugin_utils import rbee_control
from rbee.deploy.ansible_inventory import ansible_inventory
from rbee.spec import load_spec
from tests.ansible.test_inventory import plain

ROOT = Path(__file__).parents[2]
SOURCE = ROOT / "ansible_collections" / "rbee" / "cluster"
EXAMPLE = ROOT / "inventory" / "cluster.example.yaml"
BIN = Path(sys.executable).parent
GALAXY = BIN / "ansible-galaxy"

pytestmark = pytest.mark.skipif(not GALAXY.exists(), reason="ansible-core is not installed in this venv")


def _env(collections: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "RBEE_CONTROL"))}
    only = {"ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false"}  # that copy
    return {**env, **only, "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", **extra}


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball of ``ansible-galaxy collection build``."""
    out = tmp_path_factory.mktemp("build")
    run = _run([str(GALAXY), "collection", "build", str(SOURCE), "--output-path", str(out)], out, _env(out))
    assert run.returncode == 0, run.stdout + run.stderr
    (tarball,) = out.glob("rbee-cluster-*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def installed(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collections path ``ansible-galaxy collection install -p`` put the built collection in."""
    path = tmp_path_factory.mktemp("collections")
    run = _run([str(GALAXY), "collection", "install", "-p", str(path), str(built)], path, _env(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (path / "ansible_collections" / "rbee" / "cluster" / "MANIFEST.json").exists()
    return path


def _inventory(installed: Path, folder: Path, spec_text: str, **env: str) -> subprocess.CompletedProcess[str]:
    (folder / "cluster.yaml").write_text(spec_text)
    (folder / "inventory.rbee.yml").write_text("plugin: rbee.cluster.spec\n")
    command = [str(BIN / "ansible-inventory"), "-i", "inventory.rbee.yml", "--list"]
    return _run(command, folder, _env(installed, **env))


def test_the_build_holds_the_collection(built: Path) -> None:
    with tarfile.open(built) as archive:
        names = set(archive.getnames())
        manifest = json.load(archive.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert manifest["collection_info"]["namespace"] == "rbee" and manifest["collection_info"]["name"] == "cluster"
    wanted = {
        "meta/runtime.yml", "playbooks/site.yml", "plugins/inventory/spec.py", "plugins/action/control.py",
        "plugins/plugin_utils/rbee_control.py", "roles/rbee_preflight/meta/argument_specs.yml",
        "roles/rbee_runtime/tasks/services.yml", "extensions/molecule/default/molecule.yml", "README.md",
    }  # fmt: skip
    assert wanted <= names, wanted - names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_inventory_plugin_gives_the_hosts_groups_and_vars_of_the_spec(installed: Path, tmp_path: Path) -> None:
    """The plugin's hosts, groups and variables are rbee's inventory of the spec (``rbee spec ansible-inventory``)."""
    run = _inventory(installed, tmp_path, EXAMPLE.read_text())
    assert run.returncode == 0, run.stderr
    raw = json.loads(run.stdout)["_meta"]["hostvars"]["workstation"]
    assert raw["ansible_host"] == "192.168.1.20" and raw["ansible_user"] == "deploy"  # plain: testinfra reads them
    assert raw["rbee_host"] == {"__ansible_unsafe": "workstation"}  # spec data: never templated
    listed = plain(json.loads(run.stdout))
    assert listed["queen"]["hosts"] == ["blep"]
    assert listed["hives"]["hosts"] == ["blep", "workstation", "mac-mini"]
    spec_file = tmp_path / "cluster.yaml"
    expected = ansible_inventory(load_spec(spec_file), spec_file)["all"]
    cluster = {**expected["vars"], "rbee_spec_sha256": hashlib.sha256(spec_file.read_bytes()).hexdigest()}
    for name, host in expected["children"]["hives"]["hosts"].items():
        assert listed["_meta"]["hostvars"][name] == {**cluster, **host}, name
    assert listed["_meta"]["hostvars"]["workstation"]["rbee_gpus"] == [0, 1]
    assert listed["_meta"]["hostvars"]["blep"]["rbee_spec_file"] == str(spec_file.resolve())


def test_a_local_host_keeps_the_one_trusted_template(installed: Path, tmp_path: Path) -> None:
    """A local host's ``ansible_python_interpreter`` is rbee's template, rendered by Ansible (the playbook's Python)."""
    (tmp_path / "cluster.yaml").write_text("cluster: home\nhosts:\n  - {name: box, address: localhost}\n")
    (tmp_path / "inventory.rbee.yml").write_text("plugin: rbee.cluster.spec\n")
    msg = "msg={{ ansible_python_interpreter }}|{{ ansible_connection }}|{{ rbee_roles | join(',') }}"
    command = [str(BIN / "ansible"), "-i", "inventory.rbee.yml", "box", "-m", "ansible.builtin.debug", "-a", msg]
    run = _run(command, tmp_path, _env(installed))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f'"msg": "{sys.executable}|local|queen,hive"' in run.stdout, run.stdout


def test_a_bad_spec_is_an_error_at_its_place_and_stops_the_playbook(installed: Path, tmp_path: Path) -> None:
    bad = "cluster: lab\nhosts:\n  - {name: a, address: x, backend: gpu}\n"
    run = _inventory(installed, tmp_path, bad, ANSIBLE_INVENTORY_UNPARSED_FAILED="true")
    assert run.returncode != 0
    where = f"{tmp_path / 'cluster.yaml'}:3:36: hosts[0].backend: must be one of auto, cpu, cuda, metal (got 'gpu')"
    assert where in run.stderr, run.stderr
    deploy = _run([str(BIN / "ansible-playbook"), "-i", "inventory.rbee.yml", "rbee.cluster.site"], tmp_path,
                  _env(installed))  # fmt: skip
    assert deploy.returncode != 0 and where in deploy.stderr
    assert "no host in group hives: no cluster spec was read" in deploy.stdout, deploy.stdout


def _without_rbee(folder: Path) -> Path:
    """A Python that imports Ansible but not rbee (a pipx or distro Ansible): a venv seeing the main venv's packages
    through a ``.pth`` line, so rbee's editable finder (a ``.pth`` import there) never runs."""
    venv = folder / "ansible-only"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    packages = next(p for p in sys.path if p.endswith("site-packages") and (Path(p) / "ansible").is_dir())
    (site / "main.pth").write_text(packages + "\n")
    return venv / "bin" / "python"


@pytest.mark.slow
def test_ansible_without_rbee_finds_rbee_on_path_or_names_pip_install(installed: Path, tmp_path: Path) -> None:
    python = _without_rbee(tmp_path)
    assert _run([str(python), "-c", "import ansible, rbee"], tmp_path, _env(installed, PYTHONPATH="")).returncode != 0
    (tmp_path / "cluster.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "inventory.rbee.yml").write_text("plugin: rbee.cluster.spec\n")
    command = [
        str(python),
        "-c",
        "from ansible.cli.inventory import main; main()",
        "-i",
        "inventory.rbee.yml",
        "--graph",
    ]
    with_rbee = _run(command, tmp_path, _env(installed, PATH=f"{BIN}:/usr/bin:/bin", PYTHONPATH=""))
    assert with_rbee.returncode == 0 and "|--@queen:" in with_rbee.stdout, with_rbee.stderr
    bare = _run(
        command, tmp_path, _env(installed, PATH="/usr/bin:/bin", PYTHONPATH="", ANSIBLE_INVENTORY_UNPARSED_FAILED="1")
    )
    assert bare.returncode != 0
    assert "cannot import rbee and no `rbee` is on PATH; `pip install rbee`" in bare.stderr, bare.stderr


def test_the_control_action_names_pip_install_rbee_in_one_line(installed: Path, tmp_path: Path) -> None:
    """A Python without rbee (``-S``: no site-packages) given to the action: one line naming ``pip install rbee``."""
    nothing = tmp_path / "python-without-rbee"
    nothing.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    nothing.chmod(0o755)
    play = tmp_path / "play.yml"
    play.write_text(
        "- {hosts: localhost, gather_facts: false, tasks: [{name: probe, rbee.cluster.control: {helper: probe}}]}\n"
    )
    env = _env(installed, RBEE_CONTROL_PYTHON=str(nothing), PYTHONPATH="")  # no checkout on the path either
    run = _run([str(BIN / "ansible-playbook"), str(play)], tmp_path, env)
    assert run.returncode != 0
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("[ERROR]")]
    assert f"{nothing} cannot import rbee (No module named 'rbee'); `pip install rbee`" in line, run.stdout


def test_interpreter_of_a_console_script(tmp_path: Path) -> None:
    """rbee's ``rbee`` command → its Python: the venv's ``python`` next to it, else its ``#!`` line."""
    assert rbee_control.interpreter_of(str(BIN / "rbee")) == str(BIN / "python")  # the venv, not its base Python
    script = tmp_path / "bin" / "rbee"
    script.parent.mkdir()
    script.write_text("#!/opt/rbee/bin/python3.12 -s\nimport rbee\n")
    assert rbee_control.interpreter_of(str(script)) == "/opt/rbee/bin/python3.12"
    script.write_text("#!/usr/bin/env sh\n")
    assert rbee_control.interpreter_of(str(script)).endswith("sh")


@pytest.mark.slow
def test_ansible_lint_passes_on_the_installed_collection(installed: Path) -> None:
    """``ansible-lint`` (profile production, the collection's .ansible-lint) in the installed copy."""
    here = installed / "ansible_collections" / "rbee" / "cluster"
    env = _env(installed, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    run = _run([str(BIN / "ansible-lint"), "--offline"], here, env, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "Profile 'production' was required, and it passed" in run.stdout + run.stderr
