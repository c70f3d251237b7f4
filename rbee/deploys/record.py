"""What this deploy put on a host, recorded in ``<prefix>/release.json`` and kept as a release (``rbee releases``).

Only inputs go in (spec hash, rbee's version, engine build and wheel, wheelhouse and model checksums, the release
id), no time stamp and no commit: an unchanged deploy writes the same record and so changes nothing. The commits it
came from go with the kept release (``provenance.json``), written only here. The text is
built by ``rbee.deploy.release_record`` (as on the Ansible path), once per host and run (``control.run_inputs``).

A record that differs is a new release on this host: one command (``rbee.deploy.releases.keep_command``) keeps
the live install as ``<prefix>/releases/<id>`` (hard links, cheap), points ``current`` at it, writes the record
last and prunes to ``deploy.keep_releases``. It runs after every other step, so a release is only what a step-by-
step deploy finished. A host whose record is unchanged gets no command (a no-op deploy stays one round trip).
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.operations import server

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.release_record import RECORD
from rbee.deploy.releases import keep_command
from rbee.deploys import control, control_run
from rbee.deploys.atomic import set_metadata
from rbee.deploys.provenance import release_origin, run_release_id


@deploy("rbee release record")
def record(plan: HostPlan, changes: Changes) -> None:
    """Write this host's release record and keep the release when the record differs (else fix its mode)."""
    dest = f"{plan.layout.prefix}/{RECORD}"
    if changes.has("file", dest):
        text = control.run_inputs(plan).record
        keep = control_run.spec().deploy.keep_releases
        command = keep_command(plan.layout, run_release_id(), text, keep, origin=release_origin())
        server.shell(name="record: release.json", commands=[command])
    elif changes.has("file-mode", dest):
        set_metadata(name="record: release.json", path=dest, mode="644")
