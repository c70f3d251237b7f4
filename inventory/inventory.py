"""pyinfra inventory from a checkout: ``pyinfra inventory/inventory.py deploys/site.py``.

Reads the cluster spec named by ``$RBEE_SPEC`` (default: ``inventory/cluster.yaml``), validates it and exposes
its groups (``rbee.deploys.inventory``; a pip-installed rbee has the same file as ``rbee.deploys.entry``).
"""

from pathlib import Path

from rbee.deploys.inventory import groups

queen, hives = groups(Path(__file__).resolve().parent)
