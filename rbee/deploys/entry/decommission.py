"""pyinfra deploy file: prune the hosts that left the spec (``rbee.deploys.decommission``; run by ``rbee deploy``)."""

from rbee.deploys.decommission import prune

prune()
