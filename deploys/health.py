"""Step 6, the health gate: wait until the queen sees every deployed hive and the placed workers idle.

Runs on the queen's host entry, from the control machine, over the queen's own API. A ready
cluster changes nothing (a second deploy reports no changes); a timeout fails naming what is
missing. The cluster's state is printed at the end.
"""

from __future__ import annotations

import sys
from collections import Counter

import httpx
from pyinfra.api.deploy import deploy
from pyinfra.context import host, state

from deploys.facts import host_data
from deploys.operations import wait_until
from deploys.services import api_keys_text
from rbee.deploy.layout import worker_instances


def _expected() -> tuple[set[str], Counter[str]]:
    hives: set[str] = set()
    workers: Counter[str] = Counter()
    for active in state.inventory.get_active_hosts():
        name = active.data.rbee_host
        hives.add(name)
        workers[name] = len(worker_instances(host_data(active)))
    return hives, workers


def _missing(client: httpx.Client) -> str:
    hives, workers = _expected()
    try:
        seen = client.get("/v1/hives").json()["hives"]
        running = client.get("/v1/workers").json()["workers"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return f"the queen at {client.base_url} ({type(exc).__name__}: {exc})"
    online = {h["hive_id"] for h in seen if h["status"] == "online"}
    missing = [f"hive {h}" for h in sorted(hives - online)]
    idle = Counter(
        w["hive_id"] for w in running if w["state"] in ("idle", "busy") and w.get("managed_by") == "external"
    )
    missing += [f"{n - idle[h]} placed worker(s) on {h}" for h, n in sorted(workers.items()) if idle[h] < n]
    return ", ".join(missing)


def _print_state(client: httpx.Client) -> None:
    workers = client.get("/v1/workers").json()["workers"]
    hives = client.get("/v1/hives").json()["hives"]
    lines = [f"--> rbee cluster at {client.base_url}: {len(hives)} hive(s), {len(workers)} worker(s)"]
    for hive in sorted(hives, key=lambda h: h["hive_id"]):
        mine = [w for w in workers if w["hive_id"] == hive["hive_id"]]
        described = ", ".join(f"{w['model_id']} {w['state']}" for w in mine) or "no workers"
        lines.append(f"    {hive['hive_id']:<16} {hive['status']:<7} {hive['url']:<28} {described}")
    print("\n".join(lines), file=sys.stderr, flush=True)


@deploy("rbee health gate")
def health_gate() -> None:
    """On the queen's host entry: wait for the cluster, then print it."""
    if "queen" not in host.data.rbee_roles:
        return
    keys = api_keys_text()
    headers = {"Authorization": f"Bearer {keys.splitlines()[0]}"} if keys else {}
    client = httpx.Client(base_url=host.data.rbee_queen_url, headers=headers, timeout=5.0)

    def check() -> str:
        missing = _missing(client)
        if not missing:
            _print_state(client)
        return missing

    wait_until(
        name="health: the queen sees every hive and placed worker",
        check=check,
        timeout_s=float(host.data.rbee_runtime["loading_timeout"]),
        description="cluster",
    )
