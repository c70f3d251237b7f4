"""The macOS (launchd) branches of the runtime and services steps: no useradd, no systemd.

A macOS host's plan (``plan.service_manager == "launchd"``) holds plists instead of units. Here:
the service account is made with ``dscl`` (``rbee.deploy.macos``), its folders with ``files.directory``,
and each daemon is brought to its plan by ``launchd_daemon`` (``rbee.deploy.launchd.daemon_steps``:
bootout before a changed plist is replaced, bootstrap when not loaded, kickstart -k on a changed digest).
Nothing here runs ``systemctl``.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from collections.abc import Generator, Mapping
from typing import Any, cast

from pyinfra.api.command import StringCommand
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.operations import files

from rbee.deploy import launchd
from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan, PlannedFile
from rbee.deploy.layout import CONFIG_DIR, MACOS_DATA_DIR, MACOS_LOG_DIR
from rbee.deploy.macos import service_account_script
from rbee.deploys import control_run
from rbee.deploys.atomic import upload_commands
from rbee.deploys.operations import CONFIG_FILES, put_planned_files


def _stamp_command(stamp: str, want: str) -> StringCommand:
    folder = shlex.quote(stamp.rsplit("/", 1)[0])
    return StringCommand(f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(want)} > {shlex.quote(stamp)}")


@operation()
def service_account(user: str, home: str) -> Generator[StringCommand, None, None]:
    """The service group and user, made with ``dscl`` (the diff found one missing; ``server.user`` runs useradd)."""
    yield StringCommand(service_account_script(user, home))


@operation()
def launchd_daemon(planned: PlannedFile, label: str, want: str, stamp: str) -> Generator[Any, None, None]:
    """Bring one launchd daemon to its plan: its plist (``planned``) in place, loaded, running ``want``.

    ``want``: the digest of its inputs (``PlannedService.digest``), kept in ``stamp`` once it has
    (re)started from them; the order of the launchctl calls is ``launchd.daemon_steps``; what the host
    holds is the preflight's state (``control_run.host_state``).
    """
    state = control_run.host_state()
    on_disk = state.files.get(planned.path)
    steps = launchd.daemon_steps(
        label,
        state=cast(launchd.DaemonState, state.launchd.get(label, "absent")),
        plist_current=on_disk is not None and on_disk.sha256 == hashlib.sha256(planned.text.encode()).hexdigest(),
        started_with_current=state.stamps.get(stamp.rsplit("/", 1)[-1]) == want,
    )
    if not steps.commands and not steps.put:
        host.noop(f"{label} runs its current plist and inputs")
        return
    for command in steps.before:
        yield StringCommand(command)
    if steps.put:  # temp file, fsync, rename: launchd never reads a half-written plist
        yield from upload_commands(
            io.StringIO(planned.text), planned.path, user="root", group=planned.group, mode=planned.mode
        )
    for command in steps.after:
        yield StringCommand(command)
    if steps.restarts:
        yield _stamp_command(stamp, want)


@operation()
def remove_daemon(label: str) -> Generator[StringCommand, None, None]:
    """Boot out a daemon that is no longer planned (a worker placed elsewhere) and delete its plist."""
    yield StringCommand(launchd.bootout_command(label))
    yield StringCommand(f"rm -f {shlex.quote(launchd.plist_path(label))}")


def runtime_account_and_folders(plan: HostPlan, changes: Changes) -> None:
    """The Darwin part of the runtime step: the service account and rbee's folders, where the diff says so."""
    user = plan.service_user
    if changes.has("account"):
        service_account(name=f"runtime: service user {user} (dscl)", user=user, home=MACOS_DATA_DIR)
    folders = (
        ("runtime: config folder", CONFIG_DIR, "root"),
        ("runtime: state folder", MACOS_DATA_DIR, user),
        ("runtime: log folder", MACOS_LOG_DIR, user),
    )
    for name, path, owner in folders:
        if changes.has("dir", path):
            files.directory(name=name, path=path, user=owner, group=user, mode="750")
    # launchd has no LoadCredential: the daemons read their credentials themselves, from a folder only they read
    if changes.has("dir", f"{MACOS_DATA_DIR}/credentials"):
        files.directory(name="runtime: credentials folder", path=f"{MACOS_DATA_DIR}/credentials", user=user,
                        group=user, mode="700")  # fmt: skip


def services(plan: HostPlan, changes: Changes, release: str, model_sha256: Mapping[str, str]) -> None:
    """The Darwin services step: configs in place, each daemon loaded and current, stale workers gone."""
    put_planned_files(plan, changes, CONFIG_FILES, put_elsewhere="launchd ")
    daemons = {f.label.removeprefix("launchd "): f for f in plan.files if f.label.startswith("launchd ")}
    for service in plan.services:
        if changes.has("daemon", service.unit) or changes.has("file", daemons[service.unit].path):
            launchd_daemon(
                name=f"services: {service.unit} loaded and running its inputs", planned=daemons[service.unit],
                label=service.unit, want=service.digest(release, model_sha256),
                stamp=f"{plan.layout.stamps}/service-{service.unit}",
            )  # fmt: skip
    for stale in changes.of("remove-worker"):
        remove_daemon(name=f"services: remove worker {stale.target} (no longer placed)",
                      label=launchd.worker_label(stale.target))  # fmt: skip
