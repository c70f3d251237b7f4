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
from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.files import Sha256File
from pyinfra.operations import files

from deploys.atomic import atomic_put
from deploys.facts import StampFile
from deploys.operations import put_planned
from rbee.deploy import launchd
from rbee.deploy.host_plan import HostPlan, PlannedFile
from rbee.deploy.layout import CONFIG_DIR, LAUNCH_DAEMONS_DIR, MACOS_DATA_DIR, MACOS_LOG_DIR
from rbee.deploy.macos import account_check_command, service_account_script


class ServiceAccount(FactBase[list[str]]):
    """Which records of the service account exist on a macOS host: ``user``, ``group``."""

    def command(self, user: str) -> str:
        return account_check_command(user)

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())

    @staticmethod
    def default() -> list[Any]:
        return []


class LaunchdState(FactBase[launchd.DaemonState]):
    """``absent``, ``loaded`` or ``running``: a daemon as ``launchctl print system/<label>`` shows it."""

    def command(self, label: str) -> str:
        return launchd.state_command(label)

    def process(self, output: list[str]) -> launchd.DaemonState:
        return launchd.parse_state("\n".join(output))

    @staticmethod
    def default() -> launchd.DaemonState:
        return "absent"


class DaemonFiles(FactBase[list[str]]):
    """The file names in ``/Library/LaunchDaemons`` that are rbee's (``org.rbee.*.plist``)."""

    def command(self) -> str:
        return f"ls {shlex.quote(LAUNCH_DAEMONS_DIR)} 2>/dev/null | grep '^org\\.rbee\\.' || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())

    @staticmethod
    def default() -> list[Any]:
        return []


def _stamp_command(stamp: str, want: str) -> StringCommand:
    folder = shlex.quote(stamp.rsplit("/", 1)[0])
    return StringCommand(f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(want)} > {shlex.quote(stamp)}")


@operation()
def service_account(user: str, home: str) -> Generator[StringCommand, None, None]:
    """The service group and user, made with ``dscl`` when missing (pyinfra's ``server.user`` runs useradd)."""
    if host.get_fact(ServiceAccount, user=user) == ["group", "user"]:
        host.noop(f"service account {user} exists")
        return
    yield StringCommand(service_account_script(user, home))


@operation()
def launchd_daemon(planned: PlannedFile, label: str, want: str, stamp: str) -> Generator[Any, None, None]:
    """Bring one launchd daemon to its plan: its plist (``planned``) in place, loaded, running ``want``.

    ``want``: the digest of its inputs (``PlannedService.digest``), kept in ``stamp`` once it has
    (re)started from them; the order of the launchctl calls is ``launchd.daemon_steps``.
    """
    on_disk = host.get_fact(Sha256File, path=planned.path)
    steps = launchd.daemon_steps(
        label,
        state=host.get_fact(LaunchdState, label=label),
        plist_current=on_disk == hashlib.sha256(planned.text.encode()).hexdigest(),
        started_with_current=host.get_fact(StampFile, path=stamp) == want,
    )
    if not steps.commands and not steps.put:
        host.noop(f"{label} runs its current plist and inputs")
        return
    for command in steps.before:
        yield StringCommand(command)
    if steps.put:
        yield from atomic_put._inner(  # temp file, fsync, rename: launchd never reads a half-written plist
            src=io.StringIO(planned.text), dest=planned.path, user="root", group=planned.group, mode=planned.mode,
        )  # fmt: skip
    for command in steps.after:
        yield StringCommand(command)
    if steps.restarts:
        yield _stamp_command(stamp, want)


@operation()
def remove_daemon(label: str) -> Generator[StringCommand, None, None]:
    """Boot out a daemon that is no longer planned (a worker placed elsewhere) and delete its plist."""
    yield StringCommand(launchd.bootout_command(label))
    yield StringCommand(f"rm -f {shlex.quote(launchd.plist_path(label))}")


def runtime_account_and_folders(plan: HostPlan) -> None:
    """The Darwin part of the runtime step: the service account and rbee's folders (the prefix is shared)."""
    user = plan.service_user
    service_account(name=f"runtime: service user {user} (dscl)", user=user, home=MACOS_DATA_DIR)
    files.directory(name="runtime: config folder", path=CONFIG_DIR, user="root", group=user, mode="750")
    files.directory(name="runtime: state folder", path=MACOS_DATA_DIR, user=user, group=user, mode="750")
    files.directory(name="runtime: log folder", path=MACOS_LOG_DIR, user=user, group=user, mode="750")
    # launchd has no LoadCredential: the daemons read their credentials themselves, from a folder only they read
    files.directory(name="runtime: credentials folder", path=f"{MACOS_DATA_DIR}/credentials", user=user,
                    group=user, mode="700")  # fmt: skip


def services(plan: HostPlan, release: str, model_sha256: Mapping[str, str]) -> None:
    """The Darwin services step: configs in place, each daemon loaded and current, stale workers gone."""
    # One call site per kind of file, as in deploys/services.py (pyinfra tells operations apart by call site).
    put_planned(plan, "queen API keys")
    put_planned(plan, "cluster secret")
    put_planned(plan, "hive credential")
    put_planned(plan, "worker credential")
    put_planned(plan, "queen config")
    put_planned(plan, "hive config")
    daemons = {f.label.removeprefix("launchd "): f for f in plan.files if f.label.startswith("launchd ")}
    kinds = {"queen API keys", "cluster secret", "hive credential", "worker credential", "queen config", "hive config"}
    if left := [f.label for f in plan.files if f.label not in kinds and not f.label.startswith("launchd ")]:
        raise ValueError(f"services: the plan has files this step does not put on a macOS host: {left}")
    for service in plan.services:
        launchd_daemon(
            name=f"services: {service.unit} loaded and running its inputs", planned=daemons[service.unit],
            label=service.unit, want=service.digest(release, model_sha256),
            stamp=f"{plan.layout.stamps}/service-{service.unit}",
        )  # fmt: skip
    keep = [w.name for w in plan.workers]
    present: list[str] = host.get_fact(DaemonFiles)
    for stale in launchd.stale_workers(present, keep):
        remove_daemon(name=f"services: remove worker {stale} (no longer placed)", label=launchd.worker_label(stale))
