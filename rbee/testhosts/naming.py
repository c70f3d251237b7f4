"""Names and addresses of the test hosts and of the host-side objects made for them.

Every kernel object carries an ``rbee`` prefix so that ``down()`` can find strays of an
aborted run without touching anything else on the machine.
"""

from __future__ import annotations

import re

SUBNET = "10.210.0"  # /24; the machine's end of the bridge is .1, host hN is .(10+N)
PREFIX_LEN = 24
BRIDGE = "rbee-br0"
BRIDGE_ADDRESS = f"{SUBNET}.1"
MAC_PREFIX = "02:72:62:00"  # locally administered ("rb"); the bridge is ...:00:00, hN's eth0 ...:00:N
BRIDGE_MAC = f"{MAC_PREFIX}:00:00"
MAX_HOSTS = 40
NFT_TABLE = "rbee_testhosts"  # family bridge: partitions drop frames between two hosts' ports
CGROUP_DIR = "rbee-testhosts"  # one sub-cgroup per host under it (pitfall: shared cgroup => degraded boots)
NETNS_PREFIX = "rbee-"
VETH_PREFIX = "rbee-v"

_NAME = re.compile(r"^h([1-9][0-9]*)$")


class UnknownHostError(ValueError):
    """Not a test host name (h1..hMAX)."""


def index(name: str) -> int:
    """``h3`` → 3."""
    match = _NAME.match(name)
    if match is None or not 1 <= int(match.group(1)) <= MAX_HOSTS:
        raise UnknownHostError(f"{name!r} is not a test host name (h1 .. h{MAX_HOSTS})")
    return int(match.group(1))


def host_name(i: int) -> str:
    """3 → ``h3``."""
    if not 1 <= i <= MAX_HOSTS:
        raise UnknownHostError(f"host index {i} is out of range 1..{MAX_HOSTS}")
    return f"h{i}"


def names(count: int) -> list[str]:
    """``h1`` .. ``h<count>``."""
    return [host_name(i) for i in range(1, count + 1)]


def address(name: str) -> str:
    """``h3`` → ``10.210.0.13``."""
    return f"{SUBNET}.{10 + index(name)}"


def mac(name: str, *, machine_side: bool = False) -> str:
    """The fixed MAC of the host's ``eth0`` (or of its cable's machine-side end).

    Fixed, so that a host recreated with a new cable keeps its MAC and no ARP cache (this machine's,
    the other hosts') points at a dead one for half a minute.
    """
    return f"{MAC_PREFIX}:{1 if machine_side else 0:02x}:{index(name):02x}"


def netns(name: str) -> str:
    """The host's network namespace (``/run/netns/rbee-h3``)."""
    return f"{NETNS_PREFIX}{name}"


def veth(name: str) -> str:
    """Machine-side end of the host's cable, on the bridge (``rbee-v3``); ``eth0`` inside."""
    return f"{VETH_PREFIX}{index(name)}"
