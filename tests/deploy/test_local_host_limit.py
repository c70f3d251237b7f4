"""A spec host on this machine is named as in the spec (``@rbee-local/NAME``), so ``pyinfra --limit NAME`` selects it.

Runs pyinfra itself on the spec's inventory: the local host answers a fact (``hostname``, run here by the local
connector); the SSH host is on a closed loopback port, so selecting it shows the local host left out.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rbee.cli.rollout_cmd import inventory_names
from rbee.deploys import inventory
from rbee.rollout.rolling import batches
from rbee.spec import load_spec

ROOT = Path(__file__).parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
SPEC = """cluster: mixed
queen: {host: box}
hosts:
  - {name: box, address: localhost}
  - {name: far, address: 127.0.0.2, ssh: {port: 1}}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(SPEC)
    return path


def pyinfra(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_SPEC": str(spec)}
    command = [PYINFRA, "--json", *args[:-1], "inventory/inventory.py", *args[-1].split()]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_local_host_has_its_spec_name_and_the_local_group(spec: Path) -> None:
    listed = pyinfra(spec, "debug-inventory")
    assert listed.returncode == 0, listed.stderr
    hosts = {h["name"]: h["groups"] for h in json.loads(listed.stdout)}
    assert set(hosts) == {"box", "far"}
    assert "@local" in hosts["box"] and "@local" not in hosts["far"]


def test_limit_by_spec_name_selects_the_local_host_only(spec: Path) -> None:
    run = pyinfra(spec, "--limit", "box", "fact server.Hostname")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"server.Hostname": {"box": socket.gethostname()}}  # run here, locally
    assert "[far]" not in run.stderr


def test_limit_to_the_ssh_host_leaves_the_local_host_out(spec: Path) -> None:
    run = pyinfra(spec, "--limit", "far", "fact server.Hostname")
    assert "[far] Could not connect" in run.stderr
    assert "[box]" not in run.stderr and '"box"' not in run.stdout


def test_rbee_names_and_batches_are_the_spec_names(spec: Path) -> None:
    """``rbee plan`` reads pyinfra's results by these names; ``rbee deploy`` limits each batch by them."""
    assert inventory_names(spec) == ["box", "far"]
    assert batches(load_spec(spec), 1) == [["box"], ["far"]]


def test_an_install_without_the_connector_is_told_to_reinstall(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An rbee installed before the connector existed (its entry point not registered) stops with what to do."""
    monkeypatch.setenv("RBEE_SPEC", str(spec))
    monkeypatch.setattr(inventory, "entry_points", lambda **_: ())
    with pytest.raises(SystemExit) as stopped:
        inventory.groups()
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "box: a host on this machine needs rbee's pyinfra connector rbee-local" in err
    assert "install rbee again" in err
