"""pyinfra deploy file: the rbee site deploy (``rbee.deploys.site``) on every host of the inventory."""

import gc

from rbee.deploys.site import site

site()
# The objects alive now (modules, plans, connections) live until pyinfra exits: frozen, the garbage collector
# no longer scans them, neither while the operations run nor at exit (~0.2-0.3 s of a no-op otherwise).
gc.freeze()
