"""Step 1, SSH preflight: reachable, a command runs, latency, OS/arch, Python, RAM, disk, GPUs.

Every host is probed with one round trip, which also reads everything the deploy compares
(``rbee.deploy.host_state``: the later steps consult it instead of asking the host again); its time is
the host's latency. The table of all hosts is printed once. A host that cannot run rbee is failed by
name with its reasons, and the deploy goes on for the others (or stops, when the spec says
``deploy.on_unreachable: stop``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from pyinfra.api.deploy import deploy
from pyinfra.context import host, state

from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_state import HostState
from rbee.deploy.probe import HostFacts
from rbee.deploy.ssh_check import SshCheck, SshTarget, check_hosts, describe
from rbee.deploys import control, control_run, plan_export
from rbee.deploys.facts import RbeeHostState, host_data
from rbee.deploys.operations import fail_host
from rbee.spec.keys import ApiKeysError

_rows: dict[str, tuple[HostFacts, float, list[str]]] = {}
_unreached: dict[str, SshCheck] = {}


def _classify_unreached() -> None:
    """Why pyinfra could not connect to the other hosts: the SSH check's classification and hint for each."""
    missing = [h for h in state.failed_hosts if h.name not in _rows]  # pyinfra could not connect to them
    targets = [SshTarget.from_host_data(h.name, host_data(h)) for h in missing]
    _unreached.update((c.host, c) for c in check_hosts(targets, round_trips=1))


def _probe() -> tuple[HostFacts, HostState, float]:
    """The probe and the host's state (``RbeeHostState``), and that round trip's time in ms (the latency)."""
    cluster = control_run.spec()
    started = time.perf_counter()
    facts, found = host.get_fact(RbeeHostState, prefix=cluster.deploy.prefix, user=cluster.deploy.service_user)
    return facts, found, (time.perf_counter() - started) * 1000


def _write_report() -> None:
    """The table as JSON, for ``rbee plan`` / ``rbee deploy`` (``$RBEE_PREFLIGHT_REPORT``), and in ``rbee plan``'s
    dry run each planned host's changes (``plans``: ``rbee.deploy.change_report.HostChanges``). Written whole, as
    each host finishes its preflight: the last one's holds every host."""
    target = os.environ.get(plan_export.REPORT_ENV)
    if not target:
        return
    hosts = {
        name: {
            "latency_ms": round(latency, 1), "os": facts.os, "arch": facts.arch, "python": facts.python_text,
            "gpus": len(facts.gpus), "problems": problems,
        }
        for name, (facts, latency, problems) in _rows.items()
    }  # fmt: skip
    unreached = {name: check.as_dict() for name, check in _unreached.items()}
    plans = {name: found.model_dump(mode="json") for name, found in plan_export.exported.items()}
    path = Path(target)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps({"hosts": hosts, "unreachable": unreached, "plans": plans}, indent=1))
    temp.replace(path)


def _print_table() -> None:
    names = [h.name for h in state.inventory]
    width = max(len(n) for n in names) + 2
    lines = [f"--> rbee preflight ({len(_rows)}/{len(names)} hosts answered)"]
    lines.append(
        f"    {'host':<{width}}{'latency':>9}  {'os/arch':<16}{'python':<9}"
        f"{'RAM free':>10}{'disk free':>11}  gpus  result"
    )
    for name in names:
        if name not in _rows:
            lines.append(f"    {name:<{width}}{'-':>9}  unreachable: see the connection error above")
            if name in _unreached:
                lines.append(f"    {'':<{width}}{'':>9}  {describe(_unreached[name])}")
            continue
        facts, latency, problems = _rows[name]
        result = "ok" if not problems else "FAILED: " + "; ".join(problems)
        lines.append(
            f"    {name:<{width}}{latency:>7.1f}ms  {facts.os + '/' + facts.arch:<16}{facts.python_text:<9}"
            f"{facts.ram_available_bytes / 2**30:>8.1f}Gi{facts.disk_free_bytes / 2**30:>9.1f}Gi  "
            f"{len(facts.gpus):>4}  {result}"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)


@deploy("rbee preflight")
def preflight() -> HostPlan:
    """Probe this host, plan it, record its line of the table, and fail it when rbee cannot run there."""
    facts, found, latency = _probe()
    control_run.remember_state(found)
    try:
        plan = control.host_plan(facts)
        problems = list(plan.problems)
    except ApiKeysError as exc:
        plan = control.host_plan(facts, keys_readable=False)
        problems = [*plan.problems, str(exc)]
    _rows[host.name] = (facts, latency, problems)
    active = {h.name for h in state.inventory.get_active_hosts()}
    if active <= set(_rows):  # the last active host to be probed prints the table
        _classify_unreached()
        _print_table()
    if not problems:
        plan_export.export(plan)  # rbee plan's dry run only
    _write_report()
    if problems:
        fail_host(name=f"preflight: {host.name} cannot run rbee", reason="; ".join(problems))
    return plan
