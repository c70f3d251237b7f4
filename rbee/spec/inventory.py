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
from rbee.spec.placement import assign, models_on

HostEntry = tuple[str, dict[str, Any]]


def queen_url(spec: ClusterSpec) -> str:
    """The URL hives use to reach the queen."""
    host = spec.queen_host
    address = "127.0.0.1" if host.is_local else host.address
    return f"http://{address}:{spec.queen.port}"


def _resolve_key(key: str | None, base_dir: Path) -> str | None:
    if key is None:
        return None
    path = Path(key).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _connection(host: HostSpec, base_dir: Path) -> dict[str, Any]:
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


def host_data(spec: ClusterSpec, host: HostSpec, base_dir: Path) -> dict[str, Any]:
    """Everything the deploy needs to know about one host (plain JSON-able data)."""
    is_queen = host.name == spec.queen_host.name
    wanted = set(models_on(spec, host.name))
    data: dict[str, Any] = {
        **_connection(host, base_dir),
        "rbee_cluster": spec.cluster,
        "rbee_host": host.name,
        "rbee_roles": ["queen", "hive"] if is_queen else ["hive"],
        "rbee_backend": host.backend,
        "rbee_gpus": host.gpus,
        "rbee_labels": list(host.labels),
        "rbee_hive": host.hive.model_dump(),
        "rbee_reserve": {"ram_bytes": int(host.reserve.ram), "vram_bytes": int(host.reserve.vram)},
        "rbee_queen_url": queen_url(spec),
        "rbee_models": [m.model_dump() for m in spec.models if m.id in wanted],
        "rbee_placements": [
            {"model_id": a.model_id, "slots": a.slots, "device": a.device} for a in assign(spec) if a.host == host.name
        ],
        "rbee_runtime": spec.runtime.model_dump(),
        "rbee_deploy": spec.deploy.model_dump(),
    }
    if is_queen:
        data["rbee_queen"] = spec.queen.model_dump(exclude={"host"})
    return data


def _name(host: HostSpec) -> str:
    return "@local" if host.is_local else host.name


def inventory_groups(spec: ClusterSpec, base_dir: Path) -> dict[str, list[HostEntry]]:
    """The inventory's groups: ``queen`` (one host) and ``hives`` (every host)."""
    entries = {h.name: (_name(h), host_data(spec, h, base_dir)) for h in spec.hosts}
    return {"queen": [entries[spec.queen_host.name]], "hives": list(entries.values())}


def spec_path_from_env(default_dir: Path) -> Path:
    """The spec the inventory adapter reads: ``$RBEE_SPEC``, else ``<default_dir>/cluster.yaml``."""
    return Path(os.environ.get("RBEE_SPEC") or default_dir / "cluster.yaml")
