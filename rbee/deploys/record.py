"""What this deploy put on a host, recorded in ``<prefix>/release.json`` (read by ``rbee status``).

Only inputs go in (spec hash, git commit, engine build, wheelhouse and model checksums), no time
stamp: an unchanged deploy writes the same record and so changes nothing. The text is built by
``rbee.deploy.release_record`` (as on the Ansible path), once per host and run (``control.run_inputs``).
"""

from __future__ import annotations

import io

from pyinfra.api.deploy import deploy

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.release_record import RECORD
from rbee.deploys import control
from rbee.deploys.atomic import put_changed, set_metadata


@deploy("rbee release record")
def record(plan: HostPlan, changes: Changes) -> None:
    """Write this host's release record (spec, commit, engine, wheelhouse, models) when it differs."""
    dest = f"{plan.layout.prefix}/{RECORD}"
    if changes.has("file", dest):
        text = control.run_inputs(plan).record
        put_changed(name="record: release.json", src=io.StringIO(text), dest=dest, mode="644")
    elif changes.has("file-mode", dest):
        set_metadata(name="record: release.json", path=dest, mode="644")
