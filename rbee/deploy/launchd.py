"""launchd daemons of a macOS host: the property lists, and how a deploy loads, replaces and restarts them.

A macOS host runs the same three services as a Linux host, as system daemons in
``/Library/LaunchDaemons`` instead of systemd units: ``org.rbee.queen``, ``org.rbee.hive`` and one
``org.rbee.worker.<model>-<n>`` per placed worker (like the ``rbee-worker@`` instances, they outlive a
hive restart). A plist is the skeleton ``rbee/templates/launchd/rbee-<service>.plist`` (its static keys:
KeepAlive, RunAtLoad, ThrottleInterval, ...) loaded with ``plistlib`` and filled with the host's values,
then written back with ``plistlib``: every value is XML-escaped by the library, never pasted into text.

``daemon_steps`` is the deploy's decision for one daemon (pure, tested without a Mac): ``launchctl
bootout`` the loaded job before its plist is replaced, ``launchctl bootstrap`` a job that is not loaded
(``RunAtLoad`` starts it), ``launchctl kickstart -k`` a job whose inputs changed since it last started.
"""

from __future__ import annotations

import plistlib
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rbee.deploy.layout import LAUNCH_DAEMONS_DIR, MACOS_LOG_DIR
from rbee.render import templates_dir

QUEEN_LABEL = "org.rbee.queen"
HIVE_LABEL = "org.rbee.hive"
WORKER_LABEL_PREFIX = "org.rbee.worker."
PLIST_GROUP = "wheel"
"""launchd refuses a plist in /Library/LaunchDaemons unless root:wheel owns it and only root writes it."""
PLIST_MODE = "644"

FILLED_KEYS = frozenset(
    {
        "Label",
        "UserName",
        "GroupName",
        "ProgramArguments",
        "EnvironmentVariables",
        "WorkingDirectory",
        "StandardOutPath",
        "StandardErrorPath",
    }
)
"""The keys the plan fills in; a skeleton that sets one of them is an error."""

BOOTOUT_WAIT_S = 60
"""How long a deploy waits for a booted-out job to leave launchd before it bootstraps the new plist."""

Service = Literal["queen", "hive", "worker"]
DaemonState = Literal["absent", "loaded", "running"]


def worker_label(name: str) -> str:
    """The label of a placed worker's daemon: ``org.rbee.worker.<model>-<n>``."""
    return f"{WORKER_LABEL_PREFIX}{name}"


def plist_path(label: str) -> str:
    """Where a daemon's plist lives: ``/Library/LaunchDaemons/<label>.plist``."""
    return f"{LAUNCH_DAEMONS_DIR}/{label}.plist"


def log_path(label: str, log_dir: str = MACOS_LOG_DIR) -> str:
    """A daemon's log file (stdout and stderr): ``<data>/logs/queen.log``, ``hive.log``, ``worker-<name>.log``."""
    name = label.removeprefix("org.rbee.").replace("worker.", "worker-", 1)
    return f"{log_dir}/{name}.log"


class PlistError(ValueError):
    """A value cannot go into a plist (e.g. a control character, which XML 1.0 cannot carry)."""


@dataclass(frozen=True)
class LaunchdJob:
    """One daemon: its skeleton (``service``) and the values the plan fills in."""

    service: Service
    label: str
    user: str
    group: str
    program: Sequence[str]
    environment: Mapping[str, str]
    working_directory: str
    log_file: str

    def keys(self) -> dict[str, Any]:
        return {
            "Label": self.label,
            "UserName": self.user,
            "GroupName": self.group,
            "ProgramArguments": list(self.program),
            "EnvironmentVariables": dict(self.environment),
            "WorkingDirectory": self.working_directory,
            "StandardOutPath": self.log_file,
            "StandardErrorPath": self.log_file,
        }


def skeleton(service: Service) -> dict[str, Any]:
    """The static keys of a service's daemon, from ``rbee/templates/launchd/rbee-<service>.plist``."""
    path = templates_dir() / "launchd" / f"rbee-{service}.plist"
    loaded: dict[str, Any] = plistlib.loads(path.read_bytes())
    if clash := sorted(FILLED_KEYS & loaded.keys()):
        raise PlistError(f"{path} sets {clash}: those keys come from the host plan")
    return loaded


def render_plist(job: LaunchdJob) -> str:
    """The plist of one daemon as XML text (keys sorted, so the same job gives the same bytes)."""
    keys = {**skeleton(job.service), **job.keys()}
    try:
        return plistlib.dumps(keys, fmt=plistlib.FMT_XML, sort_keys=True).decode()
    except ValueError as exc:  # plistlib: "strings can't contain control characters"
        raise PlistError(f"launchd daemon {job.label!r}: {exc}") from exc


@dataclass(frozen=True)
class DaemonSteps:
    """What a deploy does for one daemon, in order: ``before`` the plist is put, the put, ``after`` it.

    ``restarts``: the steps (re)start the daemon from its current inputs, so its stamp is rewritten.
    """

    before: tuple[str, ...]
    put: bool
    after: tuple[str, ...]
    restarts: bool

    @property
    def commands(self) -> tuple[str, ...]:
        return (*self.before, *self.after)


def bootout_command(label: str) -> str:
    """``launchctl bootout`` a job and wait until launchd has let it go (bootout can answer before, e.g. 36).

    Its exit status is not trusted: the job being gone is what counts, checked with ``launchctl print``.
    """
    target = shlex.quote(f"system/{label}")
    tries = BOOTOUT_WAIT_S * 2
    return (
        f"launchctl bootout {target} 2>/dev/null || true; i=0; "
        f"while launchctl print {target} >/dev/null 2>&1; do i=$((i+1)); "
        f'if [ "$i" -gt {tries} ]; then echo "{label} still loaded {BOOTOUT_WAIT_S}s after bootout" >&2; exit 1; fi; '
        "sleep 0.5; done"
    )


def daemon_steps(label: str, state: DaemonState, plist_current: bool, started_with_current: bool) -> DaemonSteps:
    """The launchctl commands that bring one daemon to its plan (no command: it already runs it).

    ``state``: ``absent`` (launchd has no such job), ``loaded`` (known, not running) or ``running``;
    ``plist_current``: the plist on disk is the planned one; ``started_with_current``: the daemon's
    stamp says it last started from the current inputs (its ``PlannedService.digest``).
    The caller writes the stamp after these commands when the daemon was (re)started.
    """
    target = shlex.quote(f"system/{label}")
    before: tuple[str, ...] = ()
    if not plist_current and state != "absent":
        before = (bootout_command(label),)  # launchd keeps the old definition until the job is booted out
        state = "absent"
    if state == "absent":
        # enable: a job once disabled (launchctl disable) refuses to bootstrap; RunAtLoad then starts it
        after: tuple[str, ...] = (
            f"launchctl enable {target}",
            f"launchctl bootstrap system {shlex.quote(plist_path(label))}",
        )
    elif not started_with_current:
        after = (f"launchctl kickstart -k {target}",)  # -k: kill the running instance, then start
    elif state == "loaded":
        after = (f"launchctl kickstart {target}",)  # loaded but not running (exited 0 or throttled)
    else:
        after = ()
    restarts = state == "absent" or not started_with_current
    return DaemonSteps(before, not plist_current, after, restarts)


def parse_state(output: str) -> DaemonState:
    """A daemon's state from ``launchctl print system/<label>`` (empty output: launchd has no such job).

    ``launchctl print`` is meant for people; rbee reads only its ``state = running`` line.
    """
    if not output.strip():
        return "absent"
    lines = {line.strip() for line in output.splitlines()}
    return "running" if "state = running" in lines else "loaded"


def state_command(label: str) -> str:
    """The shell command whose output ``parse_state`` reads (prints nothing when the job is absent)."""
    return f"launchctl print {shlex.quote(f'system/{label}')} 2>/dev/null || true"


def stale_workers(daemon_files: Sequence[str], keep: Sequence[str]) -> list[str]:
    """Worker names whose plist (a name in ``/Library/LaunchDaemons``) is there but no longer placed."""
    names = [
        f.removeprefix(WORKER_LABEL_PREFIX).removesuffix(".plist")
        for f in daemon_files
        if f.startswith(WORKER_LABEL_PREFIX) and f.endswith(".plist")
    ]
    return sorted(n for n in names if n and n not in keep)
