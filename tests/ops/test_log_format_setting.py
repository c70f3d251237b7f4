"""``runtime.log_format``: validated in the spec, written into the units' environment, given to ``rbee up``'s
services, known to the Ansible roles; ``$RBEE_LOG_FORMAT`` and ``--log-format`` checked by each service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rbee.deploy.templates import UnitSettings, render_unit
from rbee.local.plan import LocalService
from rbee.local.processes import ServiceProcess
from rbee.spec import SpecError, parse_spec
from rbee.spec.models import RuntimeSpec
from rbee_runtime.common.ports import free_port
from tests.support.waiting import wait_until

SPEC = "cluster: lab\nhosts:\n  - {name: a, address: 10.0.0.1}\nruntime:\n  log_format: LOGS\n"
UNITS = ("rbee-queen.service", "rbee-hive.service", "rbee-worker@.service")
COLLECTION = Path(__file__).parents[2] / "ansible_collections/rbee/cluster"


def units(log_format: str) -> dict[str, str]:
    settings = UnitSettings(
        cluster="lab", host="a", python="/opt/rbee/venv/bin/python", service_user="rbee", config_dir="/etc/rbee",
        workers_dir="/etc/rbee/workers", data_dir="/var/lib/rbee", backend="cpu", gpu_indices=[],
        loading_timeout=300.0, log_format=log_format,
    )  # fmt: skip
    return {name: render_unit(name, settings) for name in UNITS}


def test_the_spec_takes_text_or_json_and_text_is_the_default() -> None:
    assert parse_spec(SPEC.replace("LOGS", "json")).runtime.log_format == "json"
    assert parse_spec("cluster: lab\nhosts:\n  - {name: a, address: 10.0.0.1}\n").runtime.log_format == "text"


@pytest.mark.parametrize("bad", ["yaml", "JSON", "'json\\nEnvironment=X=1'", "[json]"])
def test_any_other_log_format_is_a_located_spec_error(bad: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.replace("LOGS", bad), "cluster.yaml")
    rendered = [issue.render("cluster.yaml") for issue in caught.value.issues]
    assert len(rendered) == 1 and rendered[0].startswith("cluster.yaml:5:15: runtime.log_format: "), rendered
    assert "must be one of text, json" in rendered[0]


def test_json_sets_the_environment_of_every_unit_and_text_sets_nothing() -> None:
    for name, text in units("json").items():
        assert "\nEnvironment=RBEE_LOG_FORMAT=json\n" in text, name
    for name, text in units("text").items():
        assert "RBEE_LOG_FORMAT" not in text, name


def test_every_unit_is_a_notify_service_with_a_watchdog_and_its_own_log_identifier() -> None:
    rendered = units("text")
    for name, text in rendered.items():
        assert "\nType=notify\nNotifyAccess=main\n" in text and "\nWatchdogSec=" in text, name
    assert "\nSyslogIdentifier=rbee-queen\n" in rendered["rbee-queen.service"]
    assert "\nSyslogIdentifier=rbee-hive\n" in rendered["rbee-hive.service"]
    assert "\nSyslogIdentifier=rbee-worker@%i\n" in rendered["rbee-worker@.service"]
    assert "\nTimeoutStartSec=300\n" in rendered["rbee-worker@.service"]  # the spec's loading_timeout


def test_rbee_up_starts_its_services_with_the_spec_s_format(tmp_path: Path) -> None:
    config = tmp_path / "queen.yaml"
    config.write_text(yaml.safe_dump({"port": free_port()}))
    process = ServiceProcess(LocalService("queen", "queen", config, "http://127.0.0.1:1"), tmp_path, "json")
    process.start()
    try:
        wait_until(lambda: "Uvicorn running" in process.log_tail(), 30, "the queen listening")
    finally:
        assert process.stop(grace_s=10) == []
    lines = process.log_path.read_text().splitlines()
    assert lines and all(json.loads(line)["service"] == "queen" for line in lines), lines


@pytest.mark.parametrize("service", ["queen", "hive", "worker"])
def test_a_bad_rbee_log_format_stops_a_service_at_once_saying_why(service: str, tmp_path: Path) -> None:
    worker = ["--worker-id", "w", "--model-id", "m", "--model-path", str(tmp_path / "m.gguf")]
    args = {"queen": [], "hive": ["--config", str(tmp_path / "hive.yaml")], "worker": worker}[service]
    run = subprocess.run(
        [sys.executable, "-m", f"rbee_runtime.{service}", *args], env={"RBEE_LOG_FORMAT": "xml", "PATH": "/usr/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "$RBEE_LOG_FORMAT must be text or json, got 'xml'" in run.stderr


def test_every_ansible_entry_point_knows_every_runtime_setting() -> None:
    """The inventory gives ``rbee_runtime`` all of the spec's ``runtime`` settings (a missing one fails a host)."""
    wanted = set(RuntimeSpec.model_fields)
    checked = 0
    for specs in sorted(COLLECTION.glob("roles/*/meta/argument_specs.yml")):
        for entry, spec in yaml.safe_load(specs.read_text())["argument_specs"].items():
            runtime = spec.get("options", {}).get("rbee_runtime")
            if runtime is not None:
                assert set(runtime["options"]) == wanted, f"{specs.parent.parent.name} {entry}"
                checked += 1
    assert checked >= 2
