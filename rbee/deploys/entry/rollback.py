"""pyinfra deploy file: put back each host's kept release (``rbee.deploys.rollback``)."""

from rbee.deploys.rollback import roll_back

roll_back()
