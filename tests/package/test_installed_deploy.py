"""The installed wheel deploys the test hosts: ``rbee plan`` and ``rbee deploy`` of the venv, from a folder outside
the checkout, put the venv's rbee on every host (its ``+pkgtest`` version), pass the deploy checks (the health gate,
a completion through the queen, the testinfra state of each host), then plan no change; a pyinfra project of its
own runs the packaged ``site()`` with the packaged inventory, and changes nothing either.

Same cluster as tests/deploy/test_rollout_hosts.py (h1: queen + hive, h2/h3: a placed worker of ``tiny`` each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from rbee.testhosts.paths import Paths
from tests.package.conftest import ROOT, Installed

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(600)]  # the first deploy on bare hosts

API_KEY = "sk-package-test"
HOSTS = ["h1", "h2", "h3"]
DEPLOY_TIMEOUT = 900
HOST_VERSION = "/opt/rbee/venv/bin/python -c 'import importlib.metadata as m; print(m.version(\"rbee\"))'"
THIRD_PARTY_DEPLOY = '''"""Another pyinfra project's deploy file: rbee's site deploy as one of its own steps."""

from rbee.deploys.site import site

site()
'''


@pytest.fixture(scope="module")
def spec(installed: Installed, test_hosts: TestHosts, tiny_model_path: Path) -> Path:
    path = installed.home / "cluster.yaml"
    text = spec_for_hosts(
        HOSTS, cluster="deploytest", queen_host="h1",
        models_yaml=f"- {{id: tiny, source: 'file://{tiny_model_path}', context: 512}}",
        placements_yaml="- {model: tiny, hosts: [h2, h3], replicas: 2, slots: 2}",
        extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
        "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}",
    )  # fmt: skip
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def deployed(installed: Installed, spec: Path) -> subprocess.CompletedProcess[str]:
    return installed.run("rbee", "deploy", spec.name, timeout=DEPLOY_TIMEOUT, RBEE_TEST_KEYS=API_KEY)


def test_the_installed_rbee_deploys_its_own_code_to_the_hosts(
    installed: Installed, test_hosts: TestHosts, deployed: subprocess.CompletedProcess[str]
) -> None:
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    for name in HOSTS:
        assert test_hosts.ssh(name, HOST_VERSION).stdout.strip() == installed.version, name
        origin = json.loads(test_hosts.ssh(name, "cat /opt/rbee/provenance.json").stdout)
        assert origin["rbee_commit"] == ""  # an installed rbee has no checkout to name
    client = openai.OpenAI(base_url="http://10.210.0.11:7833/v1", api_key=API_KEY, max_retries=0, timeout=60)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert chat.choices[0].message.content


def test_the_hosts_pass_the_deploy_checks(spec: Path, deployed: subprocess.CompletedProcess[str]) -> None:
    """The testinfra state checks of tests/host_state (users, files, modes, units, services, ports)."""
    assert deployed.returncode == 0
    hosts = ",".join(f"paramiko://root@10.210.0.{10 + i}" for i in (1, 2, 3))
    env = {
        "RBEE_TESTINFRA": "1", "RBEE_QUEEN_HOST": "h1", "RBEE_PLACED": "h2:tiny-1,h3:tiny-1",
        "RBEE_SPEC_FILE": str(spec), "RBEE_TEST_KEYS": API_KEY,
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/host_state",
         f"--hosts={hosts}", f"--ssh-config={Paths.default().ssh_config}"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]
    assert " passed" in run.stdout


def test_a_second_plan_shows_no_change(
    installed: Installed, spec: Path, deployed: subprocess.CompletedProcess[str]
) -> None:
    assert deployed.returncode == 0
    planned = installed.run("rbee", "plan", spec.name, timeout=300, RBEE_TEST_KEYS=API_KEY)
    assert planned.returncode == 0, planned.stdout + planned.stderr  # 3: changes pending


def test_another_pyinfra_project_runs_the_packaged_site_deploy(
    installed: Installed, spec: Path, deployed: subprocess.CompletedProcess[str]
) -> None:
    """``from rbee.deploys.site import site; site()`` in a deploy file of its own, the packaged inventory: no change."""
    assert deployed.returncode == 0
    (installed.home / "their_deploy.py").write_text(THIRD_PARTY_DEPLOY)
    inventory = installed.run("python", "-m", "rbee.deploys.entry", "inventory").stdout.strip()
    assert inventory.startswith(str(installed.venv))
    run = installed.run("pyinfra", "-y", "--json", inventory, "their_deploy.py", timeout=300,
                        RBEE_SPEC=spec.name, RBEE_TEST_KEYS=API_KEY)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    totals = json.loads(run.stdout)["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0, totals
