"""``rbee testhosts``: real SSH + systemd test hosts on this machine (root), to deploy to and to break.

For example::

    rbee testhosts up 3            # h1..h3 = 10.210.0.11..13, booted in a few seconds
    rbee testhosts up 3 -r bookworm -r trixie   # h1 bookworm, h2 and h3 trixie
    rbee testhosts ls
    rbee testhosts ssh h2 -- systemctl is-system-running
    rbee testhosts kill h2         # crash; `start h2` boots it again with the same disk
    rbee testhosts cable h3 down   # timeouts;  `partition h1 h3` / `heal h1 h3`
    rbee testhosts down            # everything gone
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from rbee.cli import exits
from rbee.cli.output import print_json, stdout_console
from rbee.testhosts import naming, releases
from rbee.testhosts.hosts import TestHosts, require_root
from rbee.testhosts.packages import PackagesError
from rbee.testhosts.system import TestHostsError

app = typer.Typer(
    help="Real SSH + systemd test hosts on this machine (root): boot them, break them, destroy them.",
    no_args_is_help=True,
)

HostName = Annotated[str, typer.Argument(help="A test host: h1, h2, ...", show_default=False)]


class CableState(enum.StrEnum):
    UP = "up"
    DOWN = "down"


def _check_releases(values: list[str] | None) -> list[str] | None:
    """``--release`` values, each a supported release (else a usage error listing them)."""
    try:
        return [releases.check(v) for v in values] if values else values
    except releases.UnknownReleaseError as exc:
        raise typer.BadParameter(str(exc)) from None


def _hosts() -> TestHosts:
    return TestHosts(log=lambda message: typer.echo(message, err=True))


@contextmanager
def _errors() -> Iterator[None]:
    """Turn harness errors into a message and exit status 1 (130 on Ctrl-C)."""
    try:
        require_root()
        yield
    except (TestHostsError, PackagesError, naming.UnknownHostError, releases.UnknownReleaseError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(exits.INTERRUPTED) from None


def _timed(what: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    with _errors():
        action()
    typer.echo(f"{what} ({time.monotonic() - started:.1f}s)", err=True)


@app.command()
def up(
    count: Annotated[int, typer.Argument(min=1, max=naming.MAX_HOSTS, help="Boot h1..hCOUNT.")] = 3,
    release: Annotated[
        list[str] | None,
        typer.Option(
            "--release",
            "-r",
            help=f"Debian release of h1, h2, ... in order, the last one repeating ({', '.join(releases.RELEASES)}); "
            f"a host that exists with another release is recreated. Default: ${releases.ENV} (comma-separated) "
            f"when set, else existing hosts keep theirs and new ones run {releases.DEFAULT}.",
            show_default=False,
            callback=_check_releases,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the hosts to boot.")] = 120.0,
) -> None:
    """Boot h1..hCOUNT (already running hosts are left alone); the first run builds each release's rootfs (~2 min)."""
    started = time.monotonic()
    with _errors():
        hosts = _hosts()
        states = hosts.up(count, releases=release or releases.parse(os.environ.get(releases.ENV, "")), timeout=timeout)
    table = Table(title=f"{count} test host(s) up in {time.monotonic() - started:.1f}s", title_justify="left")
    for column in ("host", "address", "release", "systemd"):
        table.add_column(column)
    for name, state in states.items():
        table.add_row(name, naming.address(name), hosts.release(name), state)
    out = stdout_console()
    out.print(table)
    out.print(f"ssh: ssh -F {_hosts().paths.ssh_config} h1", markup=False)


@app.command()
def down(
    purge: Annotated[bool, typer.Option(help="Also delete the cached rootfs, the base and the test key.")] = False,
) -> None:
    """Destroy every host (processes, mounts, network namespaces, bridge, firewall table)."""
    hosts = _hosts()
    _timed("test hosts destroyed", lambda: hosts.down(purge=purge))
    if purge:
        typer.echo(f"removed {hosts.paths.root}", err=True)


@app.command("status", help="The same as ls.")
@app.command("ls")
def list_hosts(
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"hosts": [{name, address, release, running, ssh_ok}]}.')
    ] = False,
) -> None:
    """List the hosts: address, Debian release, running or stopped, whether SSH answers (null: not checked)."""
    with _errors():
        rows = _hosts().status()
    if as_json:
        print_json({"hosts": [{"name": r.name, "address": r.address, "release": r.release, "running": r.running,
                               "ssh_ok": r.ssh_ok} for r in rows]})  # fmt: skip
        return
    if not rows:
        typer.echo("no test hosts (rbee testhosts up 3)", err=True)
        return
    table = Table(title_justify="left")
    for column in ("host", "address", "release", "state", "ssh"):
        table.add_column(column)
    for row in rows:
        ssh = "-" if row.ssh_ok is None else ("ok" if row.ssh_ok else "no answer")
        table.add_row(row.name, row.address, row.release, "running" if row.running else "stopped", ssh)
    stdout_console().print(table)


@app.command(context_settings={"allow_interspersed_args": False})
def ssh(
    name: HostName,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --); none: a shell.")] = None,
) -> None:
    """Log in to a host as root, or run a command there: rbee testhosts ssh h1 -- systemctl status."""
    with _errors():
        naming.index(name)
        config = str(_hosts().paths.ssh_config)
    os.execvp("ssh", ["ssh", "-F", config, name, *(command or [])])


@app.command()
def start(name: HostName) -> None:
    """Boot a stopped or killed host again, with the same disk."""
    _timed(f"{name} started", lambda: _hosts().start(name))


@app.command()
def stop(name: HostName) -> None:
    """Clean poweroff of a host (connections to it are then refused)."""
    _timed(f"{name} stopped", lambda: _hosts().stop(name))


@app.command()
def kill(name: HostName) -> None:
    """Crash a host: SIGKILL its init (connections to it are then refused)."""
    _timed(f"{name} killed", lambda: _hosts().kill(name))


@app.command()
def cable(name: HostName, state: Annotated[CableState, typer.Argument(help="up or down.")]) -> None:
    """Plug (up) or pull (down) a host's network cable; pulled, its packets are dropped (timeouts)."""
    _timed(f"{name} cable {state.value}", lambda: _hosts().cable(name, state is CableState.UP))


@app.command()
def partition(a: HostName, b: HostName) -> None:
    """Drop all traffic between two hosts (both ways); the others still reach both."""
    _timed(f"{a} and {b} partitioned", lambda: _hosts().partition(a, b))


@app.command()
def heal(a: HostName, b: HostName) -> None:
    """Undo a partition between two hosts."""
    _timed(f"{a} and {b} healed", lambda: _hosts().heal(a, b))


@app.command()
def pause(name: HostName) -> None:
    """Freeze every process of a host (a hung machine)."""
    _timed(f"{name} paused", lambda: _hosts().pause(name))


@app.command()
def resume(name: HostName) -> None:
    """Thaw a paused host."""
    _timed(f"{name} resumed", lambda: _hosts().resume(name))
