"""Put back the release kept by ``deploys/snapshot.py`` and restart rbee's services on it."""

from pyinfra.operations import server

from deploys import control
from rbee.deploy.layout import HostLayout
from rbee.deploy.releases import rollback_script

server.shell(
    name="release: roll back to the previous release",
    commands=[rollback_script(HostLayout(control.spec().deploy.prefix))],
)
