"""The Ansible inventory of a spec, pure: groups, connection variables and the roles' ``rbee_*`` inputs.

The collection's inventory plugin ``rbee.cluster.spec`` reads ``ansible_inventory`` as JSON
(``python -m rbee.cli.ansible_cmd inventory-json FILE``); ``rbee spec ansible-inventory FILE``
writes it as YAML: groups ``queen`` and ``hives``, each host with its SSH settings as ``ansible_*``
variables and its ``rbee_*`` variables, the cluster-wide values in ``all.vars``. What ends up on a
host is not decided here: the roles ask the control-side helpers (``rbee.deploy.ansible_steps``)
for the host's plan (``rbee.deploy.host_plan``).

Ansible (ansible-core >= 2.19) templates the strings of an inventory file, not a plugin's values
(unless the plugin marks them trusted: the spec plugin does so only for ``TRUSTED_TEMPLATES``).
``inventory_yaml`` writes every string as ``!unsafe`` (data, never a template) but the one template
rbee itself puts there (``ansible_python_interpreter`` of a local host), so a spec value can never
run code on the control machine, even one that got past the spec's patterns.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter

from rbee.spec.inventory import connection, queen_url
from rbee.spec.models import ClusterSpec, HostSpec
from rbee.spec.placement import assign, models_on
from rbee.spec.text import LocalPath

CLUSTER_VARS = ("rbee_cluster", "rbee_queen_url", "rbee_runtime", "rbee_deploy")
"""Host data that is the same on every host: written once, in ``all.vars`` (with ``rbee_spec_sha256``)."""

DEV_NULL = "/dev/null"
LOCAL_PYTHON = "{{ ansible_playbook_python }}"
TRUSTED_TEMPLATES = {"ansible_python_interpreter": LOCAL_PYTHON}
"""The only inventory strings Ansible may template: rbee's own, never a spec value."""
_LOCAL_PATH: TypeAdapter[str] = TypeAdapter(LocalPath)


def _ssh_args(known_hosts_file: str | None) -> str | None:
    """``ansible_ssh_common_args``: fixed options, the file a checked path, shell-quoted (Ansible splits it)."""
    if known_hosts_file is None:
        return None
    if known_hosts_file == DEV_NULL:  # host keys are not checked at all (test hosts, throwaway machines)
        return shlex.join(["-o", f"UserKnownHostsFile={DEV_NULL}", "-o", "StrictHostKeyChecking=no"])
    path = _LOCAL_PATH.validate_python(known_hosts_file)  # no spaces, no '%' tokens, no '-' first, one line
    return shlex.join(["-o", f"UserKnownHostsFile={path}"])


def connection_vars(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ansible_*`` connection variables of a host, from its pyinfra data (``ssh_*`` keys)."""
    if "ssh_hostname" not in data:  # address: localhost
        return {"ansible_connection": "local", "ansible_python_interpreter": LOCAL_PYTHON}
    out: dict[str, Any] = {
        "ansible_host": data["ssh_hostname"],
        "ansible_port": data["ssh_port"],
        "ansible_user": data["ssh_user"],
        "ansible_become": bool(data.get("_sudo", False)),
        "ansible_python_interpreter": "auto_silent",
    }
    if "ssh_key" in data:
        out["ansible_ssh_private_key_file"] = data["ssh_key"]
    if (args := _ssh_args(data.get("ssh_known_hosts_file"))) is not None:
        out["ansible_ssh_common_args"] = args
    return out


def host_vars(spec: ClusterSpec, host: HostSpec) -> dict[str, Any]:
    """The ``rbee_*`` variables of a host: the roles' inputs (checked by their argument specs)."""
    is_queen = host.name == spec.queen_host.name
    wanted = set(models_on(spec, host.name))
    data: dict[str, Any] = {
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


def ansible_inventory(spec: ClusterSpec, spec_file: Path, spec_sha256: str = "") -> dict[str, Any]:
    """The YAML inventory of a spec: ``all.vars`` + groups ``hives`` (every host) and ``queen`` (one).

    ``rbee_spec_file`` (absolute) is what the roles' control-side helpers build each host's plan
    from (``rbee.deploy.host_plan``); ``spec_sha256`` (of the spec file) goes into
    ``all.vars.rbee_spec_sha256``, for the release record each host keeps.
    """
    hosts: dict[str, dict[str, Any]] = {}
    cluster: dict[str, Any] = {}
    base_dir = spec_file.resolve().parent
    for host in spec.hosts:
        data = host_vars(spec, host)
        for key in CLUSTER_VARS:
            cluster[key] = data.pop(key)
        hosts[host.name] = {**connection_vars(connection(host, base_dir)), **data}
    return {
        "all": {
            "vars": {**cluster, "rbee_spec_file": str(spec_file.resolve()), "rbee_spec_sha256": spec_sha256},
            "children": {
                "hives": {"hosts": hosts},
                "queen": {"hosts": {spec.queen_host.name: {}}},
            },
        }
    }


class _Unsafe(str):
    """A string Ansible must not template: written as ``!unsafe``."""

    __slots__ = ()


class _InventoryDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes ``_Unsafe`` strings with Ansible's ``!unsafe`` tag."""


def _represent_unsafe(dumper: yaml.SafeDumper, value: _Unsafe) -> yaml.ScalarNode:
    return dumper.represent_scalar("!unsafe", str(value))


_InventoryDumper.add_representer(_Unsafe, _represent_unsafe)


#: What a connection variable may hold to stay a plain string: no template can be made of these characters.
_INERT = re.compile(r"^[A-Za-z0-9 ._:@/+=,-]*$")


def mark_unsafe(value: Any, key: Any = None) -> Any:
    """``value`` with every string (dict keys aside) an ``_Unsafe``, but ``TRUSTED_TEMPLATES``.

    Ansible's connection variables (``ansible_host``, ``ansible_user``…) stay plain when they hold only
    characters no template is made of (the spec's patterns make sure they do): tools that read the
    inventory without Ansible's loader (testinfra's Ansible backend) take them as they are.
    """
    if isinstance(value, str):
        if TRUSTED_TEMPLATES.get(key) == value:
            return value
        inert = isinstance(key, str) and key.startswith("ansible_") and _INERT.match(value)
        return value if inert else _Unsafe(value)
    if isinstance(value, Mapping):
        return {k: mark_unsafe(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_unsafe(v) for v in value]
    return value


def inventory_yaml(inventory: Mapping[str, Any]) -> str:
    """The inventory as YAML for Ansible, every string ``!unsafe`` but rbee's own templates."""
    return yaml.dump(mark_unsafe(inventory), Dumper=_InventoryDumper, sort_keys=False, width=120)
