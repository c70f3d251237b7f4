"""The wheel installed outside the checkout: rbee runs from the venv, validates a spec, serves ``rbee up``,
ships its lock, the pyinfra entry files and the Ansible collection, and rebuilds its own wheel for the hosts."""

from __future__ import annotations

import json
import shutil
import signal
import zipfile
from pathlib import Path

import httpx
import pytest

from rbee_runtime.common.ports import free_port
from tests.package.conftest import ROOT, Installed
from tests.support.processes import ProcessPool
from tests.support.services import READY_MARKER
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]

EXAMPLE = ROOT / "inventory" / "cluster.example.yaml"


def test_rbee_runs_from_the_venv_not_the_checkout(installed: Installed) -> None:
    where = installed.run("python", "-c", "import json, sys, rbee, rbee_runtime, llama_cpp; "
                          "print(json.dumps([rbee.__file__, rbee_runtime.__file__, sys.path]))")  # fmt: skip
    assert where.returncode == 0, where.stderr
    rbee_file, runtime_file, path = json.loads(where.stdout)
    site = str(installed.venv / "lib")
    assert rbee_file.startswith(site) and runtime_file.startswith(site), (rbee_file, runtime_file)
    assert not [entry for entry in path if entry and Path(entry).resolve() == ROOT.resolve()], path
    version = installed.run("rbee", "--version")
    assert version.returncode == 0 and version.stdout.startswith(f"rbee {installed.version} "), version.stdout


def test_a_spec_is_validated_outside_the_checkout(installed: Installed) -> None:
    shutil.copy(EXAMPLE, installed.home / "cluster.yaml")
    done = installed.run("rbee", "spec", "validate", "cluster.yaml")
    assert done.returncode == 0, done.stderr
    assert "cluster.yaml: valid" in done.stdout


def test_the_entry_files_and_the_lock_ship_inside_the_package(installed: Installed) -> None:
    site = installed.run("python", "-m", "rbee.deploys.entry", "site")
    assert site.returncode == 0 and site.stdout.strip().startswith(str(installed.venv)), site.stdout + site.stderr
    check = installed.run("rbee", "wheelhouse", "lock", "--check")  # the installed metadata against its lock
    assert check.returncode == 0, check.stderr
    assert check.stdout == "the host lock matches rbee's dependencies\n"


def test_relocking_needs_uv_and_says_how_to_get_it(installed: Installed) -> None:
    """The venv has the deploy, ansible and engine extras, not dev: re-locking stops with one line, exit 2."""
    done = installed.run("rbee", "wheelhouse", "lock")
    assert done.returncode == 2
    assert done.stderr == "rbee wheelhouse lock needs uv: pip install 'rbee[dev]' (or pip install uv)\n"


def test_the_hosts_wheel_is_rebuilt_from_the_installed_files(installed: Installed, tmp_path: Path) -> None:
    """No checkout: the wheel for the hosts is the installed files again, byte for byte, the same at each build."""
    code = ("import sys; from pathlib import Path; from rbee.deploy import rbee_wheel\n"
            "assert rbee_wheel.source_tree() is None\n"
            "print(rbee_wheel.build(Path(sys.argv[1])), rbee_wheel.build(Path(sys.argv[2])))")  # fmt: skip
    done = installed.run("python", "-c", code, str(tmp_path / "a"), str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split()
    assert Path(first).name == f"rbee-{installed.version}-py3-none-any.whl"
    assert Path(first).read_bytes() == Path(second).read_bytes()
    with zipfile.ZipFile(first) as rebuilt, zipfile.ZipFile(installed.wheel) as released:
        names = set(rebuilt.namelist())
        expected = {n for n in released.namelist() if n.split("/")[0] in ("rbee", "rbee_runtime")}
        assert expected <= names
        assert {n.split("/")[0] for n in names - expected} == {f"rbee-{installed.version}.dist-info"}
        for name in expected:
            assert rebuilt.read(name) == released.read(name), name
        metadata = rebuilt.read(f"rbee-{installed.version}.dist-info/METADATA").decode()
        assert "Requires-Dist: pydantic>=2.7" in metadata
        assert rebuilt.testzip() is None


def test_the_ansible_collection_is_found_by_ansible_core(installed: Installed) -> None:
    """``pip install 'rbee[ansible]'`` is enough: ansible-core finds ``rbee.cluster`` in site-packages."""
    listed = installed.run("ansible-galaxy", "collection", "list", "rbee.cluster")
    assert listed.returncode == 0, listed.stderr
    assert str(installed.venv) in listed.stdout and "rbee.cluster" in listed.stdout
    shutil.copy(EXAMPLE, installed.home / "cluster.yaml")
    (installed.home / "inventory.rbee.yml").write_text("plugin: rbee.cluster.spec\nspec: cluster.yaml\n")
    graph = installed.run("ansible-inventory", "-i", "inventory.rbee.yml", "--graph", RBEE_API_KEYS="sk-x")
    assert graph.returncode == 0, graph.stderr
    assert "@queen:" in graph.stdout and "|--workstation" in graph.stdout


def test_rbee_up_serves_from_the_venv(installed: Installed, processes: ProcessPool, tmp_path: Path) -> None:
    """``rbee up`` of the installed package (its own engine) serves a completion, and stops on Ctrl+C."""
    queen_port, hive_port = free_port(), free_port()
    up = processes.start("rbee-up", [
        "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(installed.home),  # cwd outside the checkout
        installed.bin("rbee"), "up", "--queen-port", str(queen_port), "--hive-port", str(hive_port),
        "--run-dir", str(tmp_path / "run"),
    ], installed.env())  # fmt: skip
    wait_until(lambda: up.check_alive() or READY_MARKER in up.log(), 90, "rbee up to say the cluster is ready", 0.2)
    url = up.log().split(READY_MARKER)[1].split("/v1")[0]
    response = httpx.post(f"{url}/v1/completions", json={"model": "rbee-tiny", "prompt": "Bees", "max_tokens": 4},
                          timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"]
    up.send_signal(signal.SIGINT)
    assert up.wait(45) == 0, up.log()[-3000:]
