"""The configs and units on a deployed host are exactly its plan (``rbee.deploy.host_plan``), byte for byte.

Run after the pyinfra deploy (``tests/deploy``) and after the Ansible playbook (molecule's
verifier): both front ends must have written the same plan. ``RBEE_SPEC_FILE`` names the spec
that was deployed (and the environment holds its API keys).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import testinfra

from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.host_plan import plan_deployed_host
from rbee.deploy.probe import PROBE_SCRIPT, parse_probe
from rbee.spec import load_spec
from rbee.spec.keys import api_keys_text


def test_the_files_on_the_host_are_its_plan(host: testinfra.host.Host, hostname: str) -> None:
    spec_file = os.environ.get("RBEE_SPEC_FILE")
    if not spec_file:
        pytest.fail("RBEE_SPEC_FILE is not set: name the spec that was deployed")
    spec = load_spec(spec_file)
    facts = parse_probe(host.check_output("RBEE_PREFIX=%s sh -c %s", spec.deploy.prefix, PROBE_SCRIPT))
    keys = api_keys_text(spec, Path(spec_file).parent) if hostname == spec.queen_host.name else None
    plan = plan_deployed_host(spec, hostname, facts, api_keys_text=keys, cluster_secret=cluster_secret(spec.cluster))
    assert plan.files
    for planned in plan.files:
        on_host = host.file(planned.path)
        assert on_host.exists, planned.path
        assert on_host.content_string == planned.text, planned.path
        assert (on_host.user, on_host.group, f"{on_host.mode:o}") == ("root", plan.service_user, planned.mode)
