"""pyinfra deploy file: keep each host's running release aside (``rbee.deploys.snapshot``)."""

from rbee.deploys.snapshot import keep_release

keep_release()
