"""``rbee deploy --only-drift``: put back what drifted from the release each host runs, and touch nothing else.

A plan first (``rbee plan``'s dry run), then each host's verdict (``rbee.rollout.drift``): the drifted hosts get
their release again, in the deploy's batches with its health gate and its rollback (to that same release); hosts
in sync get nothing more; hosts where a release change is pending are skipped, for ``rbee deploy`` to roll out.
Exit 0: every host in sync or healed; 3: hosts skipped for a pending release change; 1: a host failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from rbee.cli import exits
from rbee.cli.output import print_json
from rbee.cli.spec_cmd import api_key_or_exit, read_spec_or_exit
from rbee.client import QueenClient
from rbee.deploy.redact import Redactor
from rbee.deploy.ssh_check import describe, ssh_failures
from rbee.rollout.drift import HostDrift, WantedRelease, classify, read_recorded, wanted_release
from rbee.rollout.plan import Plan, build_plan
from rbee.rollout.plan_render import change_lines
from rbee.rollout.pyinfra_run import run_pyinfra
from rbee.rollout.rolling import RolloutResult, rolling_deploy
from rbee.spec.inventory import queen_url

SCHEMA_VERSION = 1
"""``rbee deploy --only-drift --json``'s ``version`` (docs/gitops.md)."""

NAME = "rbee deploy --only-drift"


def _dry_plan(spec_file: Path, hosts: list[str], redactor: Redactor) -> Plan:
    """``rbee plan``'s dry run and its plan, redacted (exit 1 when the dry run fails)."""
    run = run_pyinfra(spec_file, "--dry")
    if not run.document:
        typer.echo(f"{NAME}: the dry run failed (pyinfra exit {run.returncode}):\n{redactor.text(run.log[-3000:])}",
                   err=True)  # fmt: skip
        for check in ssh_failures(read_spec_or_exit(spec_file), spec_file, hosts).values():
            typer.echo(describe(check), err=True)
        raise typer.Exit(exits.FAILURE)
    return build_plan(run.document, run.preflight, hosts).redacted(redactor)


def _show_drift(plan: Plan, verdict: HostDrift, say: Callable[[str], None]) -> None:
    """A drifted host's changes, with the diff of each changed file (redacted), as ``rbee plan`` shows them."""
    say(f"{verdict.host}: drifted from its release {verdict.recorded}: {len(verdict.changes)} change(s)")
    found = plan.hosts.get(verdict.host)
    if found is None or not found.pending:
        say("\n".join(f"  {line}" for line in verdict.changes))
        return
    for line, change in change_lines(found):
        say(f"  {line}")
        if change is not None and change.diff:
            say("\n".join(f"    {diff_line}" for diff_line in change.diff.splitlines()))


def outcomes(verdicts: list[HostDrift], result: RolloutResult | None) -> dict[str, tuple[str, str]]:
    """Host → (``in-sync``/``healed``/``skipped``/``failed``, why) after the heal ``result`` (None: none ran)."""
    healed = {h for batch in (result.done if result else []) for h in batch}
    failed_batch = set(result.failed_batch) if result else set()
    out: dict[str, tuple[str, str]] = {}
    for verdict in verdicts:
        host = verdict.host
        if verdict.state == "in-sync":
            out[host] = ("in-sync", "")
        elif verdict.state == "pending":
            out[host] = ("skipped", f"release change pending ({verdict.reason}): run rbee deploy")
        elif verdict.state == "failed":
            out[host] = ("failed", verdict.reason)
        elif host in healed:
            out[host] = ("healed", f"release {verdict.recorded} again")
        elif host in failed_batch and result is not None:
            back = f"back on its release {verdict.recorded}" if result.rolled_back else "NOT rolled back"
            out[host] = ("failed", f"the heal failed ({result.reason.splitlines()[0]}); {back}{result.told([host])}")
        else:
            out[host] = ("failed", "not healed: an earlier batch failed")
    return out


def exit_code(states: list[str]) -> int:
    """1: a host failed; else 3: a release change is pending somewhere; else 0."""
    if "failed" in states:
        return exits.FAILURE
    return exits.CHANGES_PENDING if "skipped" in states else exits.OK


def report_json(wanted: WantedRelease, verdicts: list[HostDrift], done: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """``rbee deploy --only-drift --json`` (schema: docs/gitops.md)."""
    hosts = {
        v.host: {
            "status": done[v.host][0],
            "reason": done[v.host][1],
            "drift": v.state,
            "recorded": v.recorded,
            "changes": list(v.changes),
        }
        for v in verdicts
    }
    states = [status for status, _ in done.values()]
    return {"version": SCHEMA_VERSION, "release": wanted.id, "unknown_models": list(wanted.unknown_models),
            "hosts": hosts, "exit": exit_code(states)}  # fmt: skip


def only_drift(spec_file: Path, batch: int, gate_timeout: float, as_json: bool, redactor: Redactor) -> int:
    """Heal the hosts that drifted from their release (see the module docstring); the exit status."""
    spec = read_spec_or_exit(spec_file)
    key = api_key_or_exit(NAME, spec, spec_file)
    say: Callable[[str], None] = (lambda line: typer.echo(line, err=True)) if as_json else typer.echo
    plan = _dry_plan(spec_file, [h.name for h in spec.hosts], redactor)
    for check in ssh_failures(spec, spec_file, plan.unreachable).values() if plan.unreachable else ():
        typer.echo(describe(check), err=True)  # why a host was not reached, as rbee plan says it
    wanted = wanted_release(spec, spec_file)
    changed = [h for h in plan.names() if plan.status(h) == "changes"]
    verdicts = classify(plan, read_recorded(spec, spec_file, changed), wanted)
    drifted = [v.host for v in verdicts if v.state == "drifted"]
    for verdict in verdicts:
        if verdict.state == "drifted":
            _show_drift(plan, verdict, say)
    result = None
    if drifted:
        say(f"{NAME}: healing {', '.join(drifted)}: release {wanted.id} again, batch by batch")
        with QueenClient(queen_url(spec), api_key=key) as queen:
            result = rolling_deploy(spec, spec_file, queen, batch, gate_timeout, say, heal=(wanted.id, drifted))
    done = {host: (status, redactor.text(why)) for host, (status, why) in outcomes(verdicts, result).items()}
    if as_json:
        print_json(report_json(wanted, verdicts, done))
    else:
        for host, (status, why) in done.items():
            typer.echo(f"{host}: {status.replace('-', ' ')}" + (f": {why}" if why else ""))
        counts = [f"{sum(1 for s, _ in done.values() if s == state)} {state.replace('-', ' ')}"
                  for state in ("healed", "in-sync", "skipped", "failed")]  # fmt: skip
        typer.echo(f"{NAME}: {', '.join(counts)}")
    return exit_code([status for status, _ in done.values()])
