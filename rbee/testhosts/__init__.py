"""Real SSH + systemd test hosts on this machine (root): systemd-nspawn containers on a private bridge.

In short::

    hosts = TestHosts()
    hosts.up(3)                      # h1..h3 = 10.210.0.11..13, each with sshd and a real systemd
    hosts.up(3, releases=("bookworm", "trixie"))   # h1 bookworm, h2 and h3 trixie (recreated if they differ)
    hosts.release("h2")              # "trixie"
    hosts.ssh("h2", "systemctl is-system-running").stdout
    hosts.kill("h2"); hosts.start("h2")
    hosts.down()                     # everything gone: processes, mounts, netns, bridge, nft table
"""

from rbee.testhosts.hosts import HostStatus, TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from rbee.testhosts.paths import Paths
from rbee.testhosts.system import TestHostsError

__all__ = ["HostStatus", "Paths", "TestHosts", "TestHostsError", "spec_for_hosts"]
