"""The ``rbee spec`` commands and the pyinfra inventory adapter, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from rbee.cli.main import app

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "inventory" / "cluster.example.yaml"
runner = CliRunner()


def test_validate_prints_a_summary_and_exits_0() -> None:
    result = runner.invoke(app, ["spec", "validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    for word in ("blep", "workstation", "mac-mini", "tinyllama", "qwen2.5-0.5b", "valid"):
        assert word in result.output


def test_validate_invalid_spec_exits_2_listing_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster: lab\nhosts:\n  - name: a\n    address: x\n    backend: gpu\n  - name: a\n    address: y\n")
    result = runner.invoke(app, ["spec", "validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:5:14: hosts[0].backend: must be one of" in result.output
    assert f"{bad}:6:11: hosts[1].name: duplicate host name" in result.output
    assert "2 problems" in result.output


def test_validate_missing_file_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["spec", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read the spec: No such file or directory" in result.output


def test_schema_is_a_json_schema_with_every_section() -> None:
    result = runner.invoke(app, ["spec", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert {"cluster", "queen", "hosts", "models", "placements", "runtime", "deploy"} <= set(schema["properties"])
    assert schema["required"] == ["cluster", "hosts"]
    assert schema["$defs"]["HostSpec"]["additionalProperties"] is False


def test_inventory_json_matches_the_spec() -> None:
    result = runner.invoke(app, ["spec", "inventory", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)
    assert [h for h, _ in groups["queen"]] == ["blep"]
    hives = dict(groups["hives"])
    assert set(hives) == {"blep", "workstation", "mac-mini"}
    ws = hives["workstation"]
    assert ws["ssh_hostname"] == "192.168.1.20" and ws["ssh_user"] == "deploy" and ws["_sudo"] is True
    assert ws["rbee_host"] == "workstation" and ws["rbee_roles"] == ["hive"]
    assert ws["rbee_spec_file"] == str(EXAMPLE.resolve()) and hives["blep"]["rbee_roles"] == ["queen", "hive"]
    assert {key for key in ws if key.startswith("rbee_")} == {"rbee_host", "rbee_roles", "rbee_spec_file"}


def test_local_host_uses_rbees_named_local_connector(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("cluster: one\nhosts:\n  - {name: box, address: localhost}\n")
    result = runner.invoke(app, ["spec", "inventory", str(spec), "--json"])
    groups = json.loads(result.output)
    assert groups["hives"][0][0] == "@rbee-local/box"  # pyinfra's local connector, host named box
    assert groups["hives"][0][1] == {"rbee_host": "box", "rbee_roles": ["queen", "hive"], "rbee_spec_file": str(spec)}


def _pyinfra(spec: Path) -> subprocess.CompletedProcess[str]:
    pyinfra = Path(sys.executable).parent / "pyinfra"
    env = {**os.environ, "RBEE_SPEC": str(spec)}
    return subprocess.run(
        [str(pyinfra), "inventory/inventory.py", "debug-inventory"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pyinfra_reads_the_spec_through_the_adapter() -> None:
    result = _pyinfra(EXAMPLE)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for host in ("[blep]", "[workstation]", "[mac-mini]"):
        assert host in output
    assert f'"rbee_spec_file": "{EXAMPLE.resolve()}"' in output


def test_pyinfra_adapter_refuses_an_invalid_spec(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster: lab\nhosts:\n  - name: a\n    address: x\n    hive: {port: -1}\n")
    result = _pyinfra(bad)
    assert result.returncode == 2
    assert f"{bad}:5:18: hosts[0].hive.port:" in result.stderr
