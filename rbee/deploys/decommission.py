"""Take rbee off hosts a deploy prunes, run by ``rbee deploy`` after every batch of the spec is healthy.

The hosts are not in the spec any more: their inventory comes from the applied-hosts record (``rbee.deploy.
applied_hosts``, validated), written by ``rbee.rollout.prune`` into a file named by ``$RBEE_PRUNE_FILE`` that the
``prune_inventory`` entry file reads (``groups``). Each host has one action (``host.data.rbee_action``):

- ``decommission``: drain and stop the workers, stop hive and queen, remove the units, ``/etc/rbee``, the hive's
  state and rbee's entries of the prefix (``rbee.deploy.decommission_script``);
- ``remove-queen``: a host that stays a hive, whose queen moved elsewhere: only the queen goes;
- ``record``: the queen's host: write the applied-hosts record (``rbee_record``).

Each is one command. The deregistration of a pruned hive at the queen follows from the control machine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import server

from rbee.deploy.applied_hosts import PRUNE_FILE_ENV
from rbee.deploy.decommission_script import decommission_script, queen_removal_script
from rbee.spec.inventory import HostEntry

ACTIONS = ("decommission", "remove-queen", "record")


def groups() -> tuple[list[HostEntry], ...]:
    """The inventory of ``$RBEE_PRUNE_FILE``: one group, ``prune`` (inventory name, host data)."""
    path = os.environ.get(PRUNE_FILE_ENV)
    if not path:
        print(f"the prune inventory needs ${PRUNE_FILE_ENV} (rbee deploy writes it)", file=sys.stderr)
        raise SystemExit(1)
    entries: list[HostEntry] = []
    for item in json.loads(Path(path).read_text())["hosts"]:
        data: dict[str, Any] = item["data"]
        if data.get("rbee_action") not in ACTIONS:
            raise SystemExit(f"{item['inventory']}: unknown action {data.get('rbee_action')!r}")
        entries.append((item["inventory"], data))
    return (entries,)


@deploy("rbee decommission")
def decommission(prefix: str) -> None:
    """Drain and stop every rbee service of this host, then remove its units, configs, state, models and venv."""
    server.shell(name="decommission: drain, stop and remove rbee (units, /etc/rbee, state, prefix)",
                 commands=[decommission_script(prefix)])  # fmt: skip


@deploy("rbee remove queen")
def remove_queen(prefix: str) -> None:
    """Stop and remove the queen of a host that stays a hive (its unit, config, cluster secret and API keys)."""
    server.shell(name="decommission: the queen moved: stop and remove it here", commands=[queen_removal_script(prefix)])


def prune() -> None:
    """The current host's action (the ``decommission`` entry file)."""
    action, prefix = str(host.data.rbee_action), str(host.data.rbee_prefix)
    if action == "decommission":
        decommission(prefix=prefix)
    elif action == "remove-queen":
        remove_queen(prefix=prefix)
    else:
        server.shell(name="record: applied-hosts.json", commands=[str(host.data.rbee_record_command)])
