"""``rbee plan``, ``rbee deploy`` and ``rbee status``: what would change, a rolling deploy, what runs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rbee.cli import exits, heal_cmd
from rbee.cli.extras import PARAMIKO, PYINFRA, require
from rbee.cli.output import print_json, stdout_console
from rbee.cli.spec_cmd import api_key_or_exit, read_spec_or_exit
from rbee.client import QueenClient
from rbee.deploy.cluster_secret import ClusterSecretError, cluster_secret
from rbee.deploy.host_lock import REFRESH_COMMAND, lock_problems
from rbee.deploy.redact import Redactor, spec_secrets
from rbee.deploy.release_record import PROVENANCE, RECORD
from rbee.deploy.ssh_check import SshCheck, describe, ssh_failures
from rbee.deploys.entry import path as entry_path
from rbee.rollout import plan_render
from rbee.rollout.plan import Plan, PruneHost, build_plan
from rbee.rollout.provenance import compare, local_inputs, status_lines
from rbee.rollout.prune import PruneState, finish, forgettable, plan_entries, read_state, report
from rbee.rollout.pyinfra_run import run_pyinfra
from rbee.rollout.rolling import batches, rolling_deploy
from rbee.spec.inventory import queen_url

SpecFile = Annotated[Path, typer.Argument(help="Path to the cluster spec (YAML).", show_default=False)]


def inventory_names(spec_file: Path) -> list[str]:
    """The pyinfra host names of a (valid) spec, in spec order: the spec's names (a host on this machine's too)."""
    spec = read_spec_or_exit(spec_file)
    return [host.name for host in spec.hosts]


class PlanFormat(StrEnum):
    """How ``rbee plan`` prints: a terminal table with diffs, or markdown for a pull-request comment."""

    TEXT = "text"
    MARKDOWN = "markdown"
    JSON = "json"


def _redactor(spec_file: Path) -> Redactor:
    """Every secret ``rbee plan`` could meet, to take out of what it prints (made nowhere: none created here)."""
    spec = read_spec_or_exit(spec_file)
    try:
        secret = cluster_secret(spec.cluster, create=False)
    except ClusterSecretError:
        secret = None
    return Redactor(spec_secrets(spec, spec_file.resolve().parent, secret))


def _print_problems(plan: Plan, why: dict[str, SshCheck]) -> None:
    for host, problems in plan.failing.items():
        typer.echo(f"{host}: cannot be deployed: {'; '.join(problems)}", err=True)
    for host in plan.unreachable:
        reason = describe(why[host]) if host in why else f"{host}: unreachable (see pyinfra's connection error)"
        typer.echo(f"{reason}; its changes are unknown", err=True)


def require_current_lock(command: str) -> None:
    """Stop (one line, exit 1) when the host lock no longer matches rbee's dependencies: the wheelhouse would
    stop anyway, but inside pyinfra, as a traceback on every host."""
    problems = lock_problems()
    if problems:
        typer.echo(f"rbee {command}: the host lock does not match rbee's dependencies ({'; '.join(problems)}): "
                   f"run `{REFRESH_COMMAND}` in rbee's checkout and commit rbee/deploy/locks/", err=True)  # fmt: skip
        raise typer.Exit(exits.FAILURE)


ForgetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--forget", metavar="HOST",
        help="A host that left the spec and is gone for good: drop it from the applied hosts and deregister its "
        "hive without reaching it (nothing is sent to it). Repeatable.",
    ),
]


def plan(
    spec_file: SpecFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (schema: docs/plan.md).")] = False,
    output_format: Annotated[
        PlanFormat,
        typer.Option("--format", help="text: a table and diffs; markdown: a pull-request comment; json: --json."),
    ] = PlanFormat.TEXT,
    no_prune: Annotated[bool, typer.Option("--no-prune", help="List no host to prune (deploy --no-prune).")] = False,
    move_queen: Annotated[bool, typer.Option("--move-queen", help="Plan as rbee deploy --move-queen.")] = False,
    forget: ForgetOption = None,
) -> None:
    """Show what a deploy would change on each host, changing nothing (exit 0: nothing to do, 3: changes).

    Per host: files, units, models, engine, runtime, services that restart and why; diffs of configs and units.
    """
    require("plan", PYINFRA, PARAMIKO)
    require_current_lock("plan")
    hosts = inventory_names(spec_file)
    redactor = _redactor(spec_file)
    spec = read_spec_or_exit(spec_file)
    forgotten = sorted(set(forget or ()))
    with ThreadPoolExecutor(1) as pool:  # the hosts that left the spec are read while pyinfra plans the others
        reads = forgotten or not no_prune
        pruning = pool.submit(read_state, spec, spec_file, move_queen=move_queen, no_prune=no_prune) if reads else None
        run = run_pyinfra(spec_file, "--dry")
        prune_state = pruning.result() if pruning is not None else PruneState()
    if refused := forgettable(prune_state, forgotten):
        for problem in refused:
            typer.echo(f"rbee plan: {problem}", err=True)
        raise typer.Exit(exits.USAGE)
    if not run.document:
        log = redactor.text(run.log[-3000:])
        typer.echo(f"rbee plan: the dry run failed (pyinfra exit {run.returncode}):\n{log}", err=True)
        for check in ssh_failures(read_spec_or_exit(spec_file), spec_file, hosts).values():
            typer.echo(describe(check), err=True)
        raise typer.Exit(exits.FAILURE)
    result = build_plan(run.document, run.preflight, hosts)
    result.prune = [
        PruneHost(host=host, removes=removes, forget=host in forgotten)
        for host, removes in plan_entries(prune_state)
        if host in forgotten or not no_prune
    ]
    result = result.redacted(redactor)
    why = ssh_failures(read_spec_or_exit(spec_file), spec_file, result.unreachable) if result.unreachable else {}
    if as_json or output_format is PlanFormat.JSON:
        print_json(result.as_json({h: c.as_dict() for h, c in why.items()}))
    elif output_format is PlanFormat.MARKDOWN:
        typer.echo(plan_render.markdown(result, {h: describe(c) for h, c in why.items()}), nl=False)
    else:
        plan_render.terminal(result, stdout_console())
    _print_problems(result, why)
    for line in (*prune_state.notes, *prune_state.problems):
        typer.echo(f"rbee plan: {line}", err=True)
    if result.failing or result.unreachable or prune_state.problems:
        raise typer.Exit(exits.FAILURE)
    raise typer.Exit(exits.CHANGES_PENDING if result.pending else exits.OK)


def _records(spec_file: Path, prefix: str) -> dict[str, dict[str, object]]:
    """Each host's ``release.json``, with its ``provenance.json`` (the commits) under ``"origin"`` (``{}`` when the
    host has no record or was not reached)."""

    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    env = {**os.environ, "RBEE_SPEC": str(spec_file.resolve())}
    record_path, origin_path = shlex.quote(f"{prefix}/{RECORD}"), shlex.quote(f"{prefix}/{PROVENANCE}")
    read = f"cat {record_path} 2>/dev/null; echo; echo {_ORIGIN_MARK}; cat {origin_path} 2>/dev/null; true"
    command = [pyinfra, "--json", str(entry_path("inventory")), "fact", "server.Command", f"command={read}"]
    done = subprocess.run(command, cwd=spec_file.resolve().parent, env=env, capture_output=True, text=True, check=False)
    try:
        facts = next(iter(json.loads(done.stdout).values()))
    except (json.JSONDecodeError, StopIteration):
        return {}
    out: dict[str, dict[str, object]] = {}
    for host, text in facts.items():
        record_text, _, origin_text = (text or "").partition(_ORIGIN_MARK)
        record, origin = _json_object(record_text), _json_object(origin_text)
        out[host] = {**record, "origin": origin} if record else {}
    return out


_ORIGIN_MARK = "--rbee-provenance--"


def _json_object(text: str) -> dict[str, object]:
    try:
        found = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def status(
    spec_file: SpecFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """Show what each host runs: its release, where it came from (spec commit, rbee, engine wheel, model checksums)
    and whether that is what the spec at hand would deploy."""
    require("status", PYINFRA)
    spec = read_spec_or_exit(spec_file)
    hosts = inventory_names(spec_file)
    records = _records(spec_file, spec.deploy.prefix)
    local = local_inputs(spec, spec_file)
    if as_json:
        compared = {h: {**r, "compared": compare(r, local)} if r else r for h, r in records.items()}
        typer.echo(json.dumps(compared, indent=1, sort_keys=True))
        return
    for host in hosts:
        record = records.get(host)
        if record is None:
            typer.echo(f"{host}: unreachable")
        elif not record:
            typer.echo(f"{host}: never deployed by rbee")
        else:
            typer.echo("\n".join(status_lines(host, record, local)))
    if any(records.get(h) is None for h in hosts):
        raise typer.Exit(exits.FAILURE)


def deploy(
    spec_file: SpecFile,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Hosts per batch after the queen's host.")] = 1,
    gate_timeout: Annotated[float, typer.Option(help="Seconds a batch may take to become healthy.")] = 180.0,
    only_drift: Annotated[
        bool,
        typer.Option(
            "--only-drift",
            help="Put back only what drifted from the release each host runs (a hand edit), "
            "batched and gated alike; skip hosts where a release change is pending (exit 3).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --only-drift: each host's outcome as JSON.")] = False,
    no_prune: Annotated[
        bool, typer.Option("--no-prune", help="Keep the hosts that left the spec running (a later deploy prunes them).")
    ] = False,
    move_queen: Annotated[
        bool, typer.Option("--move-queen", help="Let the queen move to the spec's queen host (the old one goes).")
    ] = False,
    forget: ForgetOption = None,
) -> None:
    """Rolling deploy: the queen's host, then BATCH hosts at a time, each gated on health and rolled back on failure.

    Then the hosts that left the spec are pruned (workers drained and stopped, units, configs, models and venv
    removed, the hive deregistered at the queen), unless --no-prune; rbee plan lists them first. One that is gone
    for good (retried by every deploy) is dropped with --forget HOST.

    --only-drift (the scheduled self-heal): only the hosts that drifted from the release they run get it again;
    no new release, no prune; exit 0 in sync or healed, 3 a release change is pending (rbee deploy), 1 failed."""
    require("deploy", PYINFRA, PARAMIKO)
    require_current_lock("deploy")
    if as_json and not only_drift:
        raise typer.BadParameter("goes with --only-drift", param_hint="--json")
    if only_drift and move_queen:
        raise typer.BadParameter("a queen that moves is a release change: rbee deploy --move-queen",
                                 param_hint="--move-queen")  # fmt: skip
    if only_drift and forget:
        raise typer.BadParameter("the self-heal never prunes: rbee deploy --forget HOST", param_hint="--forget")
    if only_drift:  # never a new release, never a prune: rbee.cli.heal_cmd
        raise typer.Exit(heal_cmd.only_drift(spec_file, batch, gate_timeout, as_json, _redactor(spec_file)))
    spec = read_spec_or_exit(spec_file)
    key = api_key_or_exit("rbee deploy", spec, spec_file)
    pruning = read_state(spec, spec_file, move_queen=move_queen, no_prune=no_prune)
    for line in pruning.notes:
        typer.echo(f"rbee deploy: {line}", err=True)
    if pruning.problems:
        for problem in (*pruning.problems, "nothing changed"):
            typer.echo(f"rbee deploy: {problem}", err=True)
        raise typer.Exit(exits.FAILURE)
    forgotten = frozenset(forget or ())
    if refused := forgettable(pruning, sorted(forgotten)):
        for problem in (*refused, "nothing changed"):
            typer.echo(f"rbee deploy: {problem}", err=True)
        raise typer.Exit(exits.USAGE)
    if pruning.prune:
        names = ", ".join(h.name for h in pruning.prune)
        typer.echo(f"hosts that left the spec: {names}: " + ("kept (--no-prune)" if no_prune else "pruned at the end")
                   + (f"; forgotten: {', '.join(sorted(forgotten))}" if forgotten else ""))  # fmt: skip
    with QueenClient(queen_url(spec), api_key=key) as queen:
        result = rolling_deploy(spec, spec_file, queen, batch, gate_timeout, typer.echo)
        outcome = finish(spec, spec_file, queen, pruning, cluster_secret(spec.cluster), typer.echo,
                         prune=result.ok and not no_prune, remove_old_queen=result.ok,
                         forget=forgotten if result.ok else frozenset())  # fmt: skip
    done, wrong, failed = report(outcome, spec)
    for line in done:
        typer.echo(f"rbee deploy: {line}")
    for line in wrong:
        typer.echo(f"rbee deploy: {line}", err=True)
    if result.ok:
        typer.echo(f"rbee deploy: release {result.release}: {len(result.done)} batch(es) deployed and healthy")
        if failed:
            raise typer.Exit(exits.FAILURE)
        return
    where = ", ".join(result.failed_batch)
    state = "rolled back and serving the previous release" if result.rolled_back else "NOT rolled back"
    untouched = [h for b in batches(spec, batch)[len(result.done) + 1 :] for h in b]
    said = _redactor(spec_file).text(result.reason + result.told())  # the hosts' journal: no secret goes to a CI log
    typer.echo(f"rbee deploy: failed on {where}: {said}", err=True)
    typer.echo(f"rbee deploy: {where} {state}; untouched: {', '.join(untouched) or 'none'}", err=True)
    raise typer.Exit(exits.FAILURE)
