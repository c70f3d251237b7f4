"""Keep a host's running release before a deploy changes it, when no release of it is kept yet (``adopt``).

A host deployed by rbee before release history (or by the Ansible path) runs a release that was never kept:
before the site's first change on it, ``adopt`` keeps that live install as ``adopted-<sha256 of its record>``
(``rbee.deploy.host_releases``), so a failed rollout, or ``rbee rollback``, can return to it. A host that already
has a kept release, a host never deployed and a host without changes get no command. ``keep_release`` (the
``snapshot`` entry file) does the same on every host of an inventory, deciding on the host.
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.operations import server

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_releases import RELEASE_STAMP
from rbee.deploy.layout import HostLayout
from rbee.deploy.release_record import RECORD
from rbee.deploy.releases import adopt_command
from rbee.deploys import control_run


@deploy("rbee release: adopt")
def adopt(plan: HostPlan, changes: Changes) -> None:
    """Keep the live release (never kept) before this deploy changes the host."""
    found = control_run.host_state()
    if not changes or f"{plan.layout.prefix}/{RECORD}" not in found.files or RELEASE_STAMP in found.stamps:
        return
    server.shell(
        name="release: keep the running release (deployed before release history)",
        commands=[adopt_command(plan.layout, control_run.spec().deploy.keep_releases)],
    )


@deploy("rbee release: keep")
def keep_release() -> None:
    """On every host: keep the running release when none is kept (``adopt``, decided on the host)."""
    cluster = control_run.spec()
    server.shell(
        name="release: keep the running release when none is kept",
        commands=[adopt_command(HostLayout(cluster.deploy.prefix), cluster.deploy.keep_releases)],
    )
