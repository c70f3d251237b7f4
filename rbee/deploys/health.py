"""Step 6, the health gate: wait until the queen sees every deployed hive and the placed workers ready.

Runs on the queen's host entry, from the control machine, over the queen's own API, with the one
rule of ``rbee.deploy.health``. What it checks depends on what the run did:

- a run that (re)started a service on any host: every placed worker must also stream a two-token
  completion (``serves``, all workers asked at once), so a worker that restarted into a broken state fails
  the deploy even while the queen still lists it from before;
- a no-op (nothing started): one ``GET /v1/hives`` and one ``GET /v1/workers`` showing every hive online and
  its placed workers idle or busy; no generation (nothing changed that could break one).

A ready cluster changes nothing (a second deploy reports no changes); a timeout fails naming what is missing.
The cluster's state is printed at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyinfra.api.deploy import deploy
from pyinfra.context import host, state

from rbee.client import QueenClient
from rbee.deploy import health
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploys import control, control_run
from rbee.deploys.operations import wait_until
from rbee.spec.inventory import queen_url
from rbee.spec.keys import first_api_key
from rbee.spec.placement import assign


def _expected() -> health.Expectation:
    """Every host of this run is a hive, with its placed workers (systemd units: ``managed_by`` external), each
    serving a completion when this run (re)started a service anywhere."""
    cluster = control_run.spec()
    active = {str(h.data.rbee_host) for h in state.inventory.get_active_hosts()}
    placed = dict.fromkeys(active, 0)
    for assigned in assign(cluster):
        if assigned.host in active:
            placed[assigned.host] += 1
    started = bool(control.services_started())
    secret = cluster_secret(cluster.cluster, create=False) if started else None
    return health.Expectation(placed, managed_by="external", serves=started, cluster_secret=secret)


def _print_state(queen: QueenClient) -> None:
    title, *hives = health.cluster_lines(queen.base_url, queen.hives(), queen.workers())
    print("\n".join([f"--> {title}", *(f"    {line}" for line in hives)]), file=sys.stderr, flush=True)


@deploy("rbee health gate")
def health_gate() -> None:
    """On the queen's host entry: wait for the cluster, then print it."""
    if "queen" not in host.data.rbee_roles:
        return
    cluster = control_run.spec()
    key = first_api_key(cluster, Path(host.data.rbee_spec_file).parent)
    queen = QueenClient(queen_url(cluster), api_key=key or "", timeout_s=5.0)
    timeout_s = cluster.runtime.loading_timeout

    def check() -> str:
        # health.wait_ready polls for the whole timeout; wait_until only turns its verdict into
        # this operation's result (its own deadline has passed when the waiter gives up).
        missing = health.wait_ready(queen, _expected(), timeout_s)
        if not missing:
            _print_state(queen)
        return missing

    wait_until(
        name="health: the queen sees every hive and placed worker",
        check=check,
        timeout_s=timeout_s,
        description="cluster",
    )
