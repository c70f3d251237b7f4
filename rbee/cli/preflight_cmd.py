"""``rbee preflight SPEC``: one SSH connection to every host of a spec, classified, with a hint and the latency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rbee.cli import exits
from rbee.cli.extras import PARAMIKO, require
from rbee.cli.spec_cmd import read_spec_or_exit
from rbee.deploy.ssh_check import DEFAULT_TIMEOUT_S, check_hosts, spec_targets, table

SpecFile = Annotated[Path, typer.Argument(help="Path to the cluster spec (YAML).", show_default=False)]


def preflight(
    spec_file: SpecFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for connect, banner and login.")] = (
        DEFAULT_TIMEOUT_S
    ),
) -> None:
    """Check SSH to every host: ok / unreachable / auth-failed / host-key-mismatch, with latency and a hint.

    Exit 0 when every host is ok, 1 otherwise. Hosts at localhost need no SSH and are left out.
    """
    require("preflight", PARAMIKO)
    spec = read_spec_or_exit(spec_file)
    targets = spec_targets(spec, spec_file.resolve().parent)
    checks = check_hosts(targets, timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps({"hosts": {c.host: c.as_dict() for c in checks}}, indent=1))
    elif checks:
        typer.echo(table(checks))
    else:
        typer.echo("rbee preflight: every host is localhost; no SSH to check")
    if not all(c.ok for c in checks):
        raise typer.Exit(exits.FAILURE)
