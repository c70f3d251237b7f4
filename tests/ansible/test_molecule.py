"""``molecule test`` of the built and installed ``rbee.cluster`` collection on the real test hosts.

The collection is built (``ansible-galaxy collection build``) and installed (``ansible-galaxy collection
install -p``) into a temp collections path, and molecule runs the scenario of that installed copy
(``extensions/molecule/default``): destroy, syntax, create (the test hosts h1..h3: systemd-nspawn, real
SSH and systemd), converge (``rbee.cluster.site`` over the test spec, read by the inventory plugin
``rbee.cluster.spec``), idempotence (a second converge changes nothing), verify (the testinfra checks
of tests/host_state/, the same ones the pyinfra deploy passes), destroy. Runs as root in the full
suite (the ``hosts`` marker: skipped with the reason elsewhere); a few minutes.

It takes the session's test hosts (``test_hosts``: the lease that keeps other sessions off them);
molecule's destroy boots fresh hosts again (``RBEE_MOLECULE_KEEP_HOSTS=1``) for the tests after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rbee.deploy.cluster_secret import cluster_secret
from rbee.testhosts import TestHosts
from rbee_runtime.common.credentials import hive_credential, worker_credential

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
MOLECULE = BIN / "molecule"
GALAXY = BIN / "ansible-galaxy"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MOLECULE.exists(), reason="molecule is not installed in this venv"),
]


def _installed_collection(folder: Path, env: dict[str, str]) -> Path:
    """``ansible-galaxy collection build`` of the checkout's collection, installed with ``-p folder``: its path."""
    for command in (
        [str(GALAXY), "collection", "build", str(ROOT / "ansible_collections/rbee/cluster"), "--output-path", "."],
        [str(GALAXY), "collection", "install", "-p", ".", "rbee-cluster-0.1.0.tar.gz"],
    ):
        run = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
    return folder / "ansible_collections" / "rbee" / "cluster"


@pytest.mark.timeout(1800)
def test_the_installed_collection_converges_idempotently_and_passes_the_host_checks(
    test_hosts: TestHosts, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # molecule runs ansible-playbook, ansible-config, pytest
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",  # the installed copy only, never one on sys.path
        "MOLECULE_GLOB": "extensions/molecule/*/molecule.yml",  # an installed collection has no galaxy.yml
        "RBEE_HOST_STATE_TESTS": str(ROOT / "tests" / "host_state"),
        "RBEE_MOLECULE_KEEP_HOSTS": "1",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_VERBOSITY": "1",  # -v: what a CI log shows when someone debugs; no credential may be in it
    }
    collection = _installed_collection(tmp_path, env)
    started = time.monotonic()
    run = subprocess.run(
        [str(MOLECULE), "test"], cwd=collection, env=env, capture_output=True, text=True, timeout=1700, check=False
    )
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    failures = "\n".join(line for line in out.splitlines() if line.startswith(("fatal:", "[ERROR]", "failed:")))
    assert run.returncode == 0, f"molecule test failed after {took:.0f}s:\n{failures[-6000:]}\n...\n{out[-6000:]}"
    for step in ("converge", "idempotence", "verify"):
        assert f"default > {step}: Executed: Successful" in out, out[-4000:]
    assert "Verifier completed successfully" in out
    assert re.search(r"\b\d+ passed\b", out) and not re.search(r"\b\d+ failed\b", out), out[-4000:]
    assert all(test_hosts.is_running(name) for name in ("h1", "h2", "h3")), "fresh hosts for the later tests"
    secret = cluster_secret("molecule", create=False)
    assert secret, "the converge made the cluster's secret"
    leaked = [name for name in ("h1", "h2", "h3") if hive_credential(secret, name) in out
              or worker_credential(hive_credential(secret, name)) in out]  # fmt: skip
    assert leaked == [] and "sk-molecule" not in out, f"-v output shows the credentials of {leaked}"
    print(f"molecule test of the installed collection: {took:.0f}s")
