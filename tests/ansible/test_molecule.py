"""``molecule test`` of the Ansible roles on the real test hosts (systemd-nspawn h1..h3, real SSH and systemd).

The sequence (molecule/default/molecule.yml): destroy, syntax, create, converge (playbooks/site.yml
over the inventory of a test spec), idempotence (a second converge changes nothing), verify (the
testinfra checks of tests/host_state/, the same ones the pyinfra deploy passes), destroy. Runs as root in
the full suite (the ``hosts`` marker: skipped with the reason elsewhere); a few minutes.

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

from rbee.testhosts import TestHosts

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
MOLECULE = BIN / "molecule"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MOLECULE.exists(), reason="molecule is not installed in this venv"),
]


@pytest.mark.timeout(1800)
def test_molecule_converges_idempotently_and_passes_the_host_checks(test_hosts: TestHosts) -> None:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # molecule runs ansible-playbook, ansible-config, pytest
        "RBEE_MOLECULE_KEEP_HOSTS": "1",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    started = time.monotonic()
    run = subprocess.run(
        [str(MOLECULE), "test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700, check=False
    )
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"molecule test failed after {took:.0f}s:\n{out[-8000:]}"
    for step in ("converge", "idempotence", "verify"):
        assert f"default > {step}: Executed: Successful" in out, out[-4000:]
    assert "Verifier completed successfully" in out
    assert re.search(r"\b\d+ passed\b", out) and not re.search(r"\b\d+ failed\b", out), out[-4000:]
    assert all(test_hosts.is_running(name) for name in ("h1", "h2", "h3")), "fresh hosts for the later tests"
