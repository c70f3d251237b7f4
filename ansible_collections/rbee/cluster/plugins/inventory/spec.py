"""Inventory plugin ``rbee.cluster.spec``: the hosts, groups and variables of an rbee ``cluster.yaml``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible.template import trust_as_template

from ansible_collections.rbee.cluster.plugins.plugin_utils.rbee_control import control_python, run_helper

DOCUMENTATION = r"""
name: spec
short_description: The hosts, groups and variables of an rbee cluster spec
description:
  - Reads an rbee C(cluster.yaml) (validated by rbee, so an invalid spec stops with each problem at its
    C(file:line:column)) and makes group C(hives) (every host), group C(queen) (the queen's host), each host's
    C(ansible_*) connection variables and C(rbee_*) variables, and the cluster-wide C(rbee_*) variables on C(all),
    exactly what C(rbee spec ansible-inventory) writes. No inventory file is generated.
  - Spec values are data, never templated by Ansible.
  - Needs rbee on the control machine (O(python), else C(RBEE_CONTROL_PYTHON), else Ansible's Python when it
    imports rbee, else the Python of C(rbee) on PATH); without it, one line naming C(pip install rbee).
  - The inventory file's name must end in C(rbee.yml) or C(rbee.yaml).
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [rbee.cluster.spec]
  spec:
    description: The cluster spec; a relative path is taken from the inventory file's folder.
    type: str
    default: cluster.yaml
  python:
    description: A Python that imports rbee; empty picks one as described above.
    type: str
    default: ""
author: rbee
"""

EXAMPLES = r"""
# inventory.rbee.yml, next to cluster.yaml:
#   ansible-inventory -i inventory.rbee.yml --graph
#   ansible-playbook -i inventory.rbee.yml rbee.cluster.site
plugin: rbee.cluster.spec
spec: cluster.yaml
"""

LOCAL_PYTHON = "{{ ansible_playbook_python }}"
"""The one template the inventory holds: rbee's own ``ansible_python_interpreter`` of a local host."""
INERT = re.compile(r"^[A-Za-z0-9 ._:@/+=,-]*$")
"""What a connection variable may hold to be trusted: no template can be made of these characters."""


def _trusted(key: str, value: Any) -> Any:
    """``value``, trusted when it is rbee's template or an inert connection value, else as it is (untrusted).

    Untrusted strings are data (never templated) and ``ansible-inventory --list`` writes them as
    ``{"__ansible_unsafe": ...}``; connection values stay plain for tools that read that (testinfra).
    """
    rbee_template = key == "ansible_python_interpreter" and value == LOCAL_PYTHON
    inert = key.startswith("ansible_") and isinstance(value, str) and INERT.match(value) is not None
    return trust_as_template(value) if rbee_template or inert else value


class InventoryModule(BaseInventoryPlugin):  # type: ignore[misc]
    """Groups ``hives`` and ``queen``, host and ``all`` variables from the spec (``rbee.deploy.ansible_inventory``)."""

    NAME = "rbee.cluster.spec"

    def verify_file(self, path: str) -> bool:
        return bool(super().verify_file(path)) and path.endswith(("rbee.yml", "rbee.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        spec = Path(path).resolve().parent / Path(self.get_option("spec")).expanduser()
        try:
            data, _ = run_helper(control_python(self.get_option("python")), "inventory-json", args=(str(spec),))
        except AnsibleError as exc:
            raise AnsibleParserError(str(exc)) from None
        self._populate(data["all"])

    def _populate(self, top: dict[str, Any]) -> None:
        for key, value in top["vars"].items():
            self.inventory.set_variable("all", key, value)
        for group, members in top["children"].items():
            self.inventory.add_group(group)
            for host, variables in members["hosts"].items():
                self.inventory.add_host(host, group=group)
                for key, value in variables.items():
                    self.inventory.set_variable(host, key, _trusted(key, value))
