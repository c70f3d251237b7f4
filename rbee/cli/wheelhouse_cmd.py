"""``rbee wheelhouse``: the host lock, i.e. the versions of the wheels a deploy ships to hosts.

``rbee wheelhouse lock`` makes ``rbee/deploy/locks/*.txt`` again with uv (in rbee's checkout; commit the
result), ``--upgrade`` to the newest versions allowed, ``--check`` only says whether the lock still matches
rbee's dependencies. Deploying never re-locks: it downloads exactly what the lock says.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rbee.cli import exits
from rbee.cli.extras import UV, require
from rbee.deploy.host_lock import REFRESH_COMMAND, LockError, lock_problems, parse_lock, refresh_lock

app = typer.Typer(help="The wheels a deploy ships to hosts: their lock.", no_args_is_help=True)


@app.command()
def lock(
    upgrade: Annotated[
        bool, typer.Option("--upgrade", help="The newest versions allowed (default: keep the locked ones that fit).")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only check that the lock matches rbee's dependencies (exit 1 if not).")
    ] = False,
) -> None:
    """Lock (with uv) the versions and hashes of the wheels the wheelhouse ships to hosts."""
    if check:
        problems = lock_problems()
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            typer.echo(f"the host lock is out of date: run `{REFRESH_COMMAND}`", err=True)
            raise typer.Exit(exits.FAILURE)
        typer.echo("the host lock matches rbee's dependencies")
        return
    require("wheelhouse lock", UV)
    try:
        written = refresh_lock(str(Path(sys.executable).parent / "uv"), upgrade=upgrade)
    except LockError as exc:
        typer.echo(f"rbee wheelhouse lock: {exc}", err=True)
        raise typer.Exit(exits.FAILURE) from None
    for path in written:
        typer.echo(f"{path}: {len(parse_lock(path.read_text(), path.name).pins)} pins")
