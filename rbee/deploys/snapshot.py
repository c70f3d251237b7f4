"""Keep the running release of a host aside, so a rolling deploy can roll it back (``keep_release``).

Copies the live release (``<prefix>/venv`` as hard links, ``/etc/rbee``, the rbee units and ``release.json``)
into ``<prefix>/releases/previous``; ``rbee.deploys.rollback.roll_back`` puts it back and restarts the
services. A host never deployed has nothing to keep. ``rbee deploy`` runs it before each batch.
"""

from pyinfra.api.deploy import deploy
from pyinfra.operations import server

from rbee.deploy.layout import HostLayout
from rbee.deploy.releases import snapshot_script
from rbee.deploys import control


@deploy("rbee release: keep")
def keep_release() -> None:
    """Keep the host's running release in ``<prefix>/releases/previous``."""
    server.shell(
        name="release: keep the running release aside",
        commands=[snapshot_script(HostLayout(control.spec().deploy.prefix))],
    )
