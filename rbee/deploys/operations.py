"""rbee's own pyinfra operations: each runs what the preflight's diff (``rbee.deploy.host_diff``) found missing."""

from __future__ import annotations

import io
import shlex
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import operation
from pyinfra.context import host

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploys.atomic import put_changed, set_metadata


@operation()
def fail_host(reason: str) -> Generator[Any, None, None]:
    """Fail this host with ``reason`` when the operation executes (nothing is predicted at plan time).

    A command that exits 1 with the reason on stderr: pyinfra then fails this host only, prints the reason
    with it, and goes on with the others (an exception would stop the whole run).
    """
    if host.state.is_executing:
        yield StringCommand(f"echo {shlex.quote('rbee: ' + reason)} >&2; exit 1")


def stamp_text(stamp: str, want: str) -> str:
    """Shell: write ``want`` into the stamp file ``stamp`` (its folder made when missing)."""
    folder = shlex.quote(stamp.rsplit("/", 1)[0])
    return f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(want)} > {shlex.quote(stamp)}"


def stamp_command(stamp: str, want: str) -> StringCommand:
    """``stamp_text`` as a pyinfra command."""
    return StringCommand(stamp_text(stamp, want))


@operation()
def account_and_folders(
    account: tuple[str, str, frozenset[str]] | None, folders: list[tuple[str, str, str | None, str | None]]
) -> Generator[StringCommand, None, None]:
    """One command, decided from the preflight's state (no fact read): the service account and the folders.

    ``account``: (name, home, what the host has of it: ``user``/``group``) when it is not complete: a system group
    and a system user of that group, without a login shell or a home made; ``folders``: (path, mode, owner, group),
    each made and given its mode and owner (None: left as it is).
    """
    lines = ["set -e"]
    if account is not None:
        name, home, present = account
        q = shlex.quote(name)
        if "group" not in present:
            lines.append(f"getent group {q} >/dev/null || groupadd -r {q}")
        if "user" not in present:
            lines.append(
                f"id -u {q} >/dev/null 2>&1 || useradd -r -M -d {shlex.quote(home)} -s /usr/sbin/nologin -g {q} {q}"
            )
    for path, mode, owner, group in folders:
        q = shlex.quote(path)
        lines.append(f"mkdir -p {q} && chmod {shlex.quote(mode)} {q}")
        if owner or group:
            owners = f"{owner or ''}:{group or ''}"
            lines.append(f"chown {shlex.quote(owners)} {q}")
    yield StringCommand("\n".join(lines))


@operation()
def stamped_install(commands: list[str], stamps: dict[str, str]) -> Generator[StringCommand, None, None]:
    """One remote command: ``commands`` (stopping at the first that fails), then each stamp (path → what it holds).

    Called when the preflight found other stamps; a deploy interrupted half-way leaves the old stamps, so the
    next run redoes the whole step.
    """
    stamping = [stamp_text(path, want) for path, want in stamps.items()]
    yield StringCommand("set -e\n" + "\n".join([*commands, *stamping]))


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
def service_state(
    service: str, enable: bool, start: bool, restart: bool, want: str, stamp: str
) -> Generator[StringCommand, None, None]:
    """Bring one systemd unit to its plan, as the diff found it: enabled, running, (re)started from ``want``.

    ``restart``: it last (re)started from other inputs than ``want`` (a digest kept in ``stamp``); comparing
    with what the running service started from, not with what this run changed, keeps a deploy interrupted
    between writing a config and restarting the service correct.
    """
    unit = shlex.quote(service)
    steps = [f"systemctl enable {unit}"] if enable else []
    # The deploy's own (re)start is never refused by the unit's start limit (StartLimitBurst= counts manual starts
    # too: a few deploys and rollbacks in minutes would hit it); reset-failed flushes the count, so only a unit that
    # crash-loops after this start is stopped by it.
    # --no-block: the units are Type=notify, so a blocking restart would wait for each one to be ready (a worker's
    # model load), one after the other; the health gate waits for them all at once and says what is missing.
    if restart:
        steps += [reset_start_limit(unit), f"systemctl restart --no-block {unit}", stamp_text(stamp, want)]
    elif start:
        steps += [reset_start_limit(unit), f"systemctl start --no-block {unit}"]
    if steps:
        yield StringCommand(" && ".join(steps))  # one remote call


def reset_start_limit(quoted_unit: str) -> str:
    """The shell step that clears a unit's failed state and start count (true when systemd has no such unit yet)."""
    return f"{{ systemctl reset-failed {quoted_unit} 2>/dev/null || true; }}"


@operation()
def settle_units(timeout_s: int) -> Generator[StringCommand, None, None]:
    """Wait (at most ``timeout_s``) until systemd holds no job for rbee's units: the ones restarted ``--no-block``
    have stopped their old process and started (ready or failed). A hive's last heartbeat, sent as it stops, so
    lands before the deploy ends, and the health gate (heartbeats *after* the deploy) hears only the new hive."""
    rounds = max(1, timeout_s * 2)
    yield StringCommand(
        f"i=0; while [ $i -lt {rounds} ] && systemctl list-jobs --no-legend 'rbee-*' | grep -q 'rbee-'; "
        "do sleep 0.5; i=$((i+1)); done"
    )


@operation()
def daemon_reload() -> Generator[StringCommand, None, None]:
    """``systemctl daemon-reload`` (a unit file changed, or systemd holds an older version of one)."""
    yield StringCommand("systemctl daemon-reload")


def put_planned(plan: HostPlan, label: str, changes: Changes) -> None:
    """Put the plan's file called ``label`` in place where the diff says it differs (content, owner or mode).

    Each caller's line is its own operation (pyinfra orders operations by where they are called from).
    """
    for planned in plan.files:
        if planned.label != label:
            continue
        group = plan.service_user
        if changes.has("file", planned.path):
            put_changed(  # temp file, fsync, rename: a unit or config is never seen half-written
                name=f"services: {label}", src=io.StringIO(planned.text), dest=planned.path,
                user=planned.owner, group=group, mode=planned.mode,
            )  # fmt: skip
        elif changes.has("file-mode", planned.path) or changes.has("file-owner", planned.path):
            set_metadata(name=f"services: {label}", path=planned.path, user=planned.owner, group=group,
                         mode=planned.mode)  # fmt: skip


CONFIG_FILES = ("queen API keys", "cluster secret", "hive credential", "worker credential", "TLS certificate",
                "TLS key", "cluster CA", "queen config", "hive config")  # fmt: skip
"""The plan's credentials and configs, by label: the same on systemd and launchd hosts."""


def put_planned_files(plan: HostPlan, changes: Changes, labels: Sequence[str], put_elsewhere: str) -> None:
    """``put_planned`` for each of ``labels``, in order, after checking the plan has no file left unput.

    A planned file neither in ``labels`` nor labelled ``put_elsewhere...`` (one the caller puts itself) is a bug:
    ``ValueError`` naming it, before anything is put. ``host.loop`` gives each label its own operation, the same on
    every host (one call site for all would merge, say, h1's queen config with h3's hive unit in the results).
    """
    if left := [f.label for f in plan.files if f.label not in labels and not f.label.startswith(put_elsewhere)]:
        raise ValueError(f"services: the plan has files this step does not put on this host: {left}")
    for label in host.loop(labels):  # type: ignore[no-untyped-call]
        put_planned(plan, label, changes)
