"""pyinfra inventory of the hosts ``rbee deploy`` prunes (``$RBEE_PRUNE_FILE``, from the applied-hosts record)."""

from rbee.deploys.decommission import groups

(prune,) = groups()
