"""Bring each host of the run back to a kept release and restart what differs (``rbee rollback``, failed rollouts).

The target is host data ``rbee_rollback`` (``pyinfra --data rbee_rollback=TARGET``): a release id, or
``undo:<id>`` (what a rollout that tried to make ``<id>`` current returns to). It is checked here before it
reaches a command, and again on the host (``rbee.deploy.host_releases``), which refuses a release it does not keep.
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import server

from rbee.deploy.layout import HostLayout
from rbee.deploy.releases import ReleaseIdError, restore_command
from rbee.deploys import control_run
from rbee.deploys.operations import fail_host


@deploy("rbee release: roll back")
def roll_back() -> None:
    """Return the host to the release named by ``rbee_rollback`` and restart the services whose inputs differ."""
    target = str(host.data.get("rbee_rollback") or "")
    try:
        command = restore_command(HostLayout(control_run.spec().deploy.prefix), target)
    except ReleaseIdError as exc:
        fail_host(name="release: roll back", reason=f"rbee_rollback: {exc}")
        return
    server.shell(name=f"release: roll back to {target}", commands=[command])
