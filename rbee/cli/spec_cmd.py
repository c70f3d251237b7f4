"""``rbee spec``: validate a cluster spec, print its JSON Schema or its pyinfra inventory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rbee.cli import exits
from rbee.cli.output import print_json, stdout_console
from rbee.spec import ClusterSpec, SpecError, SpecIssue, load_spec
from rbee.spec.inventory import inventory_groups
from rbee.spec.issues import format_path, show
from rbee.spec.keys import ApiKeysError, first_api_key
from rbee.spec.placement import assign, eligible_hosts

app = typer.Typer(help="Validate and inspect cluster specs (cluster.yaml).", no_args_is_help=True)

SpecFile = Annotated[Path, typer.Argument(help="Path to the cluster spec (YAML).", show_default=False)]


def read_spec_or_exit(path: Path) -> ClusterSpec:
    """Load a spec, or print why not and exit (2: invalid spec, 1: unreadable file)."""
    try:
        return load_spec(path)
    except SpecError as exc:
        count = len(exc.issues)
        typer.echo(exc.report(), err=True)
        typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''}; the spec was not accepted", err=True)
        raise typer.Exit(exits.INVALID_SPEC) from None
    except OSError as exc:
        typer.echo(f"{path}: cannot read the spec: {exc.strerror or exc}", err=True)
        raise typer.Exit(exits.FAILURE) from None


def api_key_or_exit(command: str, spec: ClusterSpec, spec_file: Path) -> str | None:
    """The spec's first API key (None without keys), or print why it cannot be read and exit 1."""
    try:
        return first_api_key(spec, spec_file.resolve().parent)
    except ApiKeysError as exc:
        typer.echo(f"{command}: {exc}", err=True)
        raise typer.Exit(exits.FAILURE) from None


def _summary(out: Console, spec: ClusterSpec) -> None:
    hosts = Table(title=f"cluster {spec.cluster}: {len(spec.hosts)} host(s)", title_justify="left")
    for column in ("host", "address", "roles", "backend", "gpus", "labels", "hive port"):
        hosts.add_column(column)
    for h in spec.hosts:
        roles = "queen, hive" if h.name == spec.queen_host.name else "hive"
        gpus = h.gpus if isinstance(h.gpus, str) else ",".join(map(str, h.gpus)) or "-"
        hosts.add_row(h.name, h.address, roles, h.backend, gpus, ",".join(h.labels) or "-", str(h.hive.port))
    out.print(hosts)
    models = Table(title=f"{len(spec.models)} model(s)", title_justify="left")
    for column in ("model", "source", "sha256", "context"):
        models.add_column(column)
    for m in spec.models:
        models.add_row(m.id, m.source, (m.sha256 or "-")[:12], str(m.context))
    out.print(models)
    placed = Table(title=f"{len(spec.placements)} placement(s)", title_justify="left")
    for column in ("model", "replicas", "slots", "device", "eligible hosts", "runs on"):
        placed.add_column(column)
    assignments = assign(spec)
    for p in spec.placements:
        runs_on = [a.host for a in assignments if a.model_id == p.model and a.device == p.device]
        eligible = ",".join(h.name for h in eligible_hosts(spec, p))
        placed.add_row(p.model, str(p.replicas), str(p.slots), p.device, eligible, ",".join(runs_on))
    out.print(placed)
    out.print(f"queen: http://{spec.queen_host.address}:{spec.queen.port}/v1", markup=False)


def issue_json(issue: SpecIssue) -> dict[str, object]:
    """One problem of ``spec validate --json``: loc, path, msg, and line, col, got, hint where known."""
    error: dict[str, object] = {"loc": list(issue.path), "path": format_path(issue.path), "msg": issue.message}
    if issue.mark is not None:
        error |= {"line": issue.mark.line, "col": issue.mark.col}
    if issue.value is not SpecIssue.value:  # the field's default: no value
        error["got"] = show(issue.value)
    if issue.hint:
        error["hint"] = issue.hint
    return error


def _validate_json(spec_file: Path) -> None:
    """``{"file", "valid", "errors": [...]}`` on stdout alone; exit 0 valid, 2 invalid, 1 unreadable."""
    try:
        load_spec(spec_file)
    except SpecError as exc:
        print_json({"file": str(spec_file), "valid": False, "errors": [issue_json(i) for i in exc.issues]})
        raise typer.Exit(exits.INVALID_SPEC) from None
    except OSError as exc:
        error = {"loc": [], "path": "(file)", "msg": f"cannot read the spec: {exc.strerror or exc}"}
        print_json({"file": str(spec_file), "valid": False, "errors": [error]})
        raise typer.Exit(exits.FAILURE) from None
    print_json({"file": str(spec_file), "valid": True, "errors": []})


@app.command()
def validate(
    spec_file: SpecFile,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when the spec is valid.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"valid": bool, "errors": [{"loc", "msg", "line", ...}]}.')
    ] = False,
) -> None:
    """Check a spec and list every problem (exit 2 when invalid), or print a summary."""
    if as_json:
        _validate_json(spec_file)
        return
    spec = read_spec_or_exit(spec_file)
    if not quiet:
        out = stdout_console()
        _summary(out, spec)
        out.print(f"{spec_file}: valid", markup=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec, for editors and CI checks."""
    stdout_console().print_json(json.dumps(ClusterSpec.model_json_schema()))


@app.command()
def inventory(
    spec_file: SpecFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the inventory as JSON.")] = False,
) -> None:
    """Print the hosts, groups and host data that the pyinfra inventory adapter gives pyinfra."""
    spec = read_spec_or_exit(spec_file)
    groups = inventory_groups(spec, spec_file)
    out = stdout_console()
    if as_json:
        out.print_json(json.dumps({name: [list(e) for e in entries] for name, entries in groups.items()}))
        return
    for name, entries in groups.items():
        out.print(f"[bold]group {name}[/bold]: {', '.join(host for host, _ in entries)}")
    for host, data in groups["hives"]:
        table = Table(title=f"host {host}", title_justify="left", show_header=False)
        table.add_column("key")
        table.add_column("value", overflow="fold")
        for key, value in data.items():
            table.add_row(key, json.dumps(value))
        out.print(table)
