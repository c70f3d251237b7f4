"""Put back the release kept by ``rbee.deploys.snapshot.keep_release`` and restart rbee's services on it."""

from pyinfra.api.deploy import deploy
from pyinfra.operations import server

from rbee.deploy.layout import HostLayout
from rbee.deploy.releases import rollback_script
from rbee.deploys import control


@deploy("rbee release: roll back")
def roll_back() -> None:
    """Return the host to its kept release and restart the services."""
    server.shell(
        name="release: roll back to the previous release",
        commands=[rollback_script(HostLayout(control.spec().deploy.prefix))],
    )
