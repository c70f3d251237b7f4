"""Turn a ``ClusterSpec`` into a pyinfra inventory: groups of ``(host name, host data)``.

``inventory/inventory.py`` calls ``inventory_groups`` so that
``pyinfra inventory/inventory.py deploys/site.py`` deploys exactly the hosts of the spec;
``rbee spec inventory FILE`` prints the same data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rbee.spec.models import ClusterSpec, HostSpec

HostEntry = tuple[str, dict[str, Any]]

LOCAL_CONNECTOR = "rbee-local"
"""The pyinfra connector of a spec host on this machine (``rbee.deploys.local``): ``@rbee-local/NAME`` is host
``NAME`` run locally, so ``--limit NAME`` and every report name it as the spec does (pyinfra's ``@local`` is
always ``@local``)."""


def queen_url(spec: ClusterSpec) -> str:
    """The URL hives use to reach the queen."""
    host = spec.queen_host
    address = "127.0.0.1" if host.is_local else host.address
    scheme = "https" if spec.deploy.tls else "http"  # deploy.tls: the queen's port serves HTTPS too
    return f"{scheme}://{address}:{spec.queen.port}"


def _resolve_key(key: str | None, base_dir: Path) -> str | None:
    if key is None:
        return None
    path = Path(key).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def connection(host: HostSpec, base_dir: Path) -> dict[str, Any]:
    """How pyinfra connects to a host (``ssh_*`` data; empty for ``localhost``: ``inventory_name``)."""
    if host.is_local:
        return {}
    data: dict[str, Any] = {
        "ssh_hostname": host.address,
        "ssh_port": host.ssh.port,
        "ssh_user": host.ssh.user,
    }
    if (key := _resolve_key(host.ssh.key, base_dir)) is not None:
        data["ssh_key"] = key
    if host.ssh.known_hosts_file:
        data["ssh_known_hosts_file"] = host.ssh.known_hosts_file
    if host.ssh.user != "root":
        data["_sudo"] = True
    return data


def host_data(spec: ClusterSpec, host: HostSpec, base_dir: Path, spec_file: Path) -> dict[str, Any]:
    """A host's pyinfra data: how to connect, its name and roles, and the spec file it comes from.

    The deploy reads the spec itself (validated once per run, ``rbee.deploys.control_run.spec``) and builds
    the host's typed plan from it (``rbee.deploy.host_plan``); nothing is copied field by field.
    """
    return {
        **connection(host, base_dir),
        "rbee_host": host.name,
        "rbee_roles": ["queen", "hive"] if host.name == spec.queen_host.name else ["hive"],
        "rbee_spec_file": str(spec_file.resolve()),
    }


def inventory_name(host: HostSpec) -> str:
    """The host's pyinfra inventory entry: its name, or ``@rbee-local/NAME`` on this machine (host ``NAME`` too)."""
    return f"@{LOCAL_CONNECTOR}/{host.name}" if host.is_local else host.name


def inventory_groups(spec: ClusterSpec, spec_file: Path) -> dict[str, list[HostEntry]]:
    """The inventory's groups: ``queen`` (one host) and ``hives`` (every host)."""
    base_dir = spec_file.resolve().parent
    entries = {h.name: (inventory_name(h), host_data(spec, h, base_dir, spec_file)) for h in spec.hosts}
    return {"queen": [entries[spec.queen_host.name]], "hives": list(entries.values())}


def spec_path_from_env(default_dir: Path) -> Path:
    """The spec the inventory adapter reads: ``$RBEE_SPEC``, else ``<default_dir>/cluster.yaml``."""
    return Path(os.environ.get("RBEE_SPEC") or default_dir / "cluster.yaml")
