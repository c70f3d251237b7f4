"""rbee site deploy from a checkout: ``pyinfra inventory/inventory.py deploys/site.py`` (all hosts in parallel).

The deploy itself ships in the package (``rbee.deploys.site``); ``rbee deploy`` runs the package's own copy of
this file (``rbee.deploys.entry``), so a pip-installed rbee needs no checkout.
"""

import gc

from rbee.deploys.site import site

site()
gc.freeze()  # what is alive now lives until pyinfra exits: the garbage collector need not scan it again
