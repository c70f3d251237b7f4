"""rbee's own pyinfra operations: each compares a fact with the wanted state and yields only what is missing."""

from __future__ import annotations

import io
import shlex
import time
from collections.abc import Callable, Generator
from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.server import Command

from deploys.atomic import atomic_put
from deploys.facts import StampFile
from rbee.deploy.host_plan import HostPlan


@operation()
def fail_host(reason: str) -> Generator[Any, None, None]:
    """Fail this host with ``reason`` when the operation executes (nothing is predicted at plan time).

    A command that exits 1 with the reason on stderr: pyinfra then fails this host only, prints the reason
    with it, and goes on with the others (an exception would stop the whole run).
    """
    if host.state.is_executing:
        yield StringCommand(f"echo {shlex.quote('rbee: ' + reason)} >&2; exit 1")


@operation()
def stamped_install(
    stamp: str, want: str, commands: list[str], description: str
) -> Generator[StringCommand, None, None]:
    """Run ``commands`` unless the stamp file already holds ``want``; write the stamp last.

    A deploy interrupted half-way leaves the old stamp, so the next run redoes the whole step.
    """
    if host.get_fact(StampFile, path=stamp) == want:
        host.noop(f"{description}: already installed")
        return
    for command in commands:
        yield StringCommand(command)
    folder = shlex.quote(stamp.rsplit("/", 1)[0])
    yield StringCommand(f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(want)} > {shlex.quote(stamp)}")


@operation()
def wait_until(
    check: Callable[[], str], timeout_s: float, description: str, interval_s: float = 0.5
) -> Generator[Any, None, None]:
    """At execution, poll ``check`` (returns what is still missing, "" when done) until done or timeout.

    Changes nothing: a ready cluster reports "No changes"; a timeout fails the host naming what is missing.
    """
    if not host.state.is_executing:
        yield from ()
        return
    deadline = time.monotonic() + timeout_s
    missing = check()
    while missing and time.monotonic() < deadline:
        time.sleep(interval_s)
        missing = check()
    if missing:
        raise OperationError(f"{description}: not ready after {timeout_s:g}s; still missing: {missing}")
    host.noop(f"{description}: ready")
    yield from ()


@operation()
def restart_on_change(service: str, want: str, stamp: str) -> Generator[StringCommand, None, None]:
    """Restart ``service`` unless it last (re)started with inputs ``want`` (a digest kept in ``stamp``).

    Comparing with what the running service was started from, not with what this run changed,
    keeps a deploy interrupted between writing a config and restarting the service correct.
    """
    if host.get_fact(StampFile, path=stamp) == want:
        host.noop(f"{service} already runs its current inputs")
        return
    yield StringCommand(f"systemctl restart {shlex.quote(service)}")
    folder = shlex.quote(stamp.rsplit("/", 1)[0])
    yield StringCommand(f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(want)} > {shlex.quote(stamp)}")


@operation()
def daemon_reload_if_needed(units: list[str]) -> Generator[StringCommand, None, None]:
    """``systemctl daemon-reload`` when systemd holds an older version of one of ``units`` than the disk."""
    names = " ".join(shlex.quote(u) for u in units)
    flags = host.get_fact(Command, command=f"systemctl show -p NeedDaemonReload --value {names} || true") or ""
    if "yes" not in flags.split():
        host.noop("systemd has the current units")
        return
    yield StringCommand("systemctl daemon-reload")


def put_planned(plan: HostPlan, label: str) -> None:
    """Put the plan's file called ``label`` in place (nothing when the plan has none).

    Each caller's line is its own operation (pyinfra orders operations by where they are called from).
    """
    for planned in plan.files:
        if planned.label == label:
            atomic_put(  # temp file, fsync, rename: a unit or config is never seen half-written
                name=f"services: {label}", src=io.StringIO(planned.text), dest=planned.path,
                user=planned.owner, group=plan.service_user, mode=planned.mode,
            )  # fmt: skip
