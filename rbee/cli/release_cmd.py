"""``rbee releases`` and ``rbee rollback``: each host's kept releases, and a rolling return to one of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rbee.cli import exits
from rbee.cli.extras import PARAMIKO, PYINFRA, require
from rbee.cli.output import print_json
from rbee.cli.spec_cmd import api_key_or_exit, read_spec_or_exit
from rbee.client import QueenClient
from rbee.deploy.releases import HostReleases, KeptRelease, ReleaseIdError, check_release_id
from rbee.rollout.history import read_releases, rollback_target
from rbee.rollout.rolling import batches, rolling_rollback
from rbee.spec.inventory import queen_url

SpecFile = Annotated[Path, typer.Argument(help="Path to the cluster spec (YAML).", show_default=False)]


def _release_json(kept: KeptRelease, current: str) -> dict[str, Any]:
    record = kept.record
    return {
        "id": kept.id, "current": kept.id == current, "created": kept.created,
        "rbee_version": record.get("rbee_version", ""), "spec_commit": kept.came_from("spec_commit") or "",
        "spec_dirty": bool(kept.came_from("spec_dirty")), "spec_sha256": record.get("spec_sha256", ""),
        "rbee_commit": kept.came_from("rbee_commit") or "", "workers": list(kept.workers),
    }  # fmt: skip


def _release_line(kept: KeptRelease, current: str) -> str:
    record = kept.record
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(kept.created)) if kept.created else "?"
    commit = str(kept.came_from("spec_commit") or "")[:12] or "-"
    dirty = " (uncommitted changes)" if kept.came_from("spec_dirty") else ""
    workers = ", ".join(kept.workers) or "no workers"
    mark = "*" if kept.id == current else " "
    return f"  {mark} {kept.id}  {when}  rbee {record.get('rbee_version') or '?'}  spec {commit}{dirty}  {workers}"


def releases(
    spec_file: SpecFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the releases as JSON.")] = False,
) -> None:
    """List each host's kept releases, the most recently running first (* marks the one running)."""
    require("releases", PYINFRA)
    spec = read_spec_or_exit(spec_file)
    listings = read_releases(spec, spec_file)
    if as_json:
        print_json({
            host: {"current": found.current, "releases": [_release_json(r, found.current) for r in found.releases]}
            if isinstance(found, HostReleases) else {"error": found}
            for host, found in listings.items()
        })  # fmt: skip
    else:
        for host, found in listings.items():
            if isinstance(found, str):
                typer.echo(f"{host}: {found}", err=True)
                continue
            typer.echo(f"{host}: {len(found.releases)} release(s) kept" + ("" if found.current else ", none running"))
            for kept in found.releases:
                typer.echo(_release_line(kept, found.current))
    if any(isinstance(found, str) for found in listings.values()):
        raise typer.Exit(exits.FAILURE)


def _checked_id(value: str | None) -> str | None:
    """``--to``: a release id, refused before anything reads a host."""
    if value is None:
        return None
    try:
        return check_release_id(value)
    except ReleaseIdError as exc:
        raise typer.BadParameter(str(exc)) from None


def rollback(
    spec_file: SpecFile,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            callback=_checked_id,
            help="The release to return to (default: the one before the current one; see rbee releases).",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Hosts per batch after the queen's host.")] = 1,
    gate_timeout: Annotated[float, typer.Option(help="Seconds a batch may take to become healthy.")] = 180.0,
) -> None:
    """Return every host to a kept release (models included), rolling: the queen's host, then BATCH hosts at a time,
    each gated on health; stops at the first batch that fails. Every host must keep the release, else nothing
    changes."""
    require("rollback", PYINFRA, PARAMIKO)
    spec = read_spec_or_exit(spec_file)
    key = api_key_or_exit("rbee rollback", spec, spec_file)
    listings = read_releases(spec, spec_file)
    target = rollback_target(listings, to)
    if target.problems:
        for problem in target.problems:
            typer.echo(f"rbee rollback: {problem}", err=True)
        typer.echo("rbee rollback: nothing was changed", err=True)
        raise typer.Exit(exits.FAILURE)
    typer.echo(f"rbee rollback: returning every host to release {target.release}")
    with QueenClient(queen_url(spec), api_key=key) as queen:
        result = rolling_rollback(spec, spec_file, queen, target.release, listings, batch, gate_timeout, typer.echo)
    if result.ok:
        typer.echo(f"rbee rollback: {len(result.done)} batch(es) back on {target.release} and healthy")
        return
    where = ", ".join(result.failed_batch)
    done = [h for b in result.done for h in b]
    untouched = [h for b in batches(spec, batch)[len(result.done) + 1 :] for h in b]
    typer.echo(f"rbee rollback: failed on {where}: {result.reason}", err=True)
    typer.echo(f"rbee rollback: back on {target.release}: {', '.join(done) or 'none'}; "
               f"untouched: {', '.join(untouched) or 'none'}", err=True)  # fmt: skip
    raise typer.Exit(exits.FAILURE)
