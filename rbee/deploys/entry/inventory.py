"""pyinfra inventory of the spec ``$RBEE_SPEC`` (else ``./cluster.yaml``): groups ``queen`` and ``hives``."""

from rbee.deploys.inventory import groups

queen, hives = groups()
