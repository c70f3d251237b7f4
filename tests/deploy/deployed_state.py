"""The host state a complete deploy leaves, and the probe and spec the tests of diffs, plans and drift plan from."""

from __future__ import annotations

from rbee.deploy.host_diff import Wanted
from rbee.deploy.host_state import WHEELHOUSE_STAMP, HostState, Meta, RemoteFile, UnitState, Upload

PROBE = "os=Linux\narch=x86_64\nglibc=2.36\npython=3.11.2\npython_venv=yes\nsystemd=yes\nprobe=done\n"
"""What the probe reports of a Debian 12 host (``rbee.deploy.probe``)."""
SPEC = """cluster: t
queen: {host: a}
hosts:
  - {name: a, address: 10.0.0.5}
  - {name: b, address: 10.0.0.6}
models:
  - {id: m, source: 'file:///m.gguf', context: 1024}
placements:
  - {model: m, hosts: [a], slots: 2}
"""
"""A two-host cluster with one model placed on host ``a``."""
LISTING = "ef" * 32
"""The wheelhouse listing's digest the state reports (any value: the stamp holds the same)."""


def deployed(wanted: Wanted) -> HostState:
    """The state a complete deploy of ``wanted`` leaves on a host."""
    files = {f.path: RemoteFile(f.sha256, Meta(f.mode, f.user or "root", f.group or "root")) for f in wanted.files}
    big = {u.path: Meta(u.mode, "root", "root", 100, 1700000000, i) for i, u in enumerate(wanted.uploads)}
    uploads = {u.path: Upload(u.sha256 or "", 100, 1700000000, i) for i, u in enumerate(wanted.uploads)}
    dirs = {d.path: Meta(d.mode, d.user or "root", d.group or "root") for d in wanted.dirs}
    stamps = {**wanted.installs, WHEELHOUSE_STAMP: f"{wanted.wheelhouse} {LISTING}"}
    stamps.update({f"service-{unit}": digest for unit, digest in wanted.services.items()})
    units = {unit: UnitState(enabled=True, active=True) for unit in wanted.services}
    return HostState(files, dirs, big, stamps, uploads, LISTING, frozenset({"user", "group"}), units, complete=True)
