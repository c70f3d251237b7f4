"""Engines the control machine cannot build are built on a host of their feature set, through pyinfra.

``PyinfraRemote`` gives ``rbee.engine.remote_build`` the host's open pyinfra connection (sudo when
the login user is not root); ``choose_builder`` picks the host: the first of ``deploy.builders``
whose feature set is the one needed, else the host being deployed (the first of its feature set).
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.context import state

from rbee.deploy.host_plan import plan_deployed_host
from rbee.deploys.facts import RbeeProbe
from rbee.engine.features import FeatureSet
from rbee.spec.models import ClusterSpec


class PyinfraRemote:
    """A ``rbee.engine.remote_build.Remote`` over a pyinfra host's connection."""

    def __init__(self, target: Host) -> None:
        self.host = target
        self.name = target.name
        self.sudo = bool(target.data.get("_sudo"))

    def run(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        ok, output = self.host.run_shell_command(
            StringCommand(command), _timeout=int(timeout) if timeout else None, _sudo=self.sudo
        )
        return (0 if ok else 1), output.output

    def put(self, local: Path, remote: str) -> None:
        if not self.host.put_file(str(local), remote, _sudo=self.sudo):
            raise OSError(f"uploading {local.name} to {self.name}:{remote} failed")

    def get(self, remote: str, local: Path) -> None:
        if not self.host.get_file(remote, str(local), _sudo=self.sudo):
            raise OSError(f"fetching {self.name}:{remote} failed")


def choose_builder(cluster: ClusterSpec, features: FeatureSet, current: Host) -> Host:
    """The host that builds ``features``: a preferred builder of that feature set, else ``current``."""
    active = {h.name: h for h in state.inventory.get_active_hosts()}
    for name in cluster.deploy.builders:
        candidate = active.get(name)
        if candidate is None or candidate.name == current.name:
            if candidate is not None:
                return candidate
            continue
        facts = candidate.get_fact(RbeeProbe, prefix=cluster.deploy.prefix)
        if plan_deployed_host(cluster, name, facts).features == features:
            return candidate
    return current
