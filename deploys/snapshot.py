"""Keep the running release of each host aside, so a rolling deploy can roll it back.

``pyinfra inventory/inventory.py deploys/snapshot.py --limit HOST`` copies the live release
(``<prefix>/venv`` as hard links, ``/etc/rbee``, the rbee units and ``release.json``) into
``<prefix>/releases/previous``; ``deploys/rollback.py`` puts it back and restarts the services.
A host never deployed has nothing to keep.
"""

from pyinfra.operations import server

from deploys import control
from rbee.deploy.layout import HostLayout
from rbee.deploy.releases import snapshot_script

server.shell(
    name="release: keep the running release aside",
    commands=[snapshot_script(HostLayout(control.spec().deploy.prefix))],
)
