"""What one deploy run shares across its hosts on the control machine: the spec, the rule for when slow work may
happen, the locks that make each piece of work happen once, file checksums, and what each host's preflight read.

Deploy files run once per host (pyinfra loads them for all hosts at once, in gevent greenlets); the memos here and in
``rbee.deploys.control_models``/``control_engine`` live for the run.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyinfra.context import host, state

from rbee.deploy.host_state import HostState
from rbee.spec import load_spec
from rbee.spec.models import ClusterSpec

DRY_RUN = "--dry" in sys.argv  # pyinfra does not expose --dry to deploy code

_specs: dict[str, ClusterSpec] = {}
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()
_file_sums: dict[str, str] = {}
_states: dict[str, HostState] = {}

T = TypeVar("T")


def once(key: str) -> threading.Lock:
    """The lock of one piece of control-side work: pyinfra loads the deploy file for all hosts at once (gevent
    greenlets; its CLI patches ``threading``), so the first host of a feature set builds and the others wait."""
    with _locks_lock:
        return _locks.setdefault(key, threading.Lock())


def memo(kind: str, table: dict[str, T], key: str, make: Callable[[], T]) -> T:
    """``table[key]``, made by ``make`` the first time (under ``once(kind:key)``: the other hosts wait for it)."""
    with once(f"{kind}:{key}"):
        if key not in table:
            table[key] = make()
        return table[key]


def slow_work_allowed() -> bool:
    """Whether the run may fetch models and build engines now.

    With ``-y`` pyinfra checks no changes and asks nothing: at once. Without it (a run that shows its changes and
    asks, ``--json`` that only prints them): only while the operations execute, which is after the confirmation.
    Never in a dry run.
    """
    return not DRY_RUN and (not state.check_for_changes or state.is_executing)


def spec() -> ClusterSpec:
    """The spec of this run (the inventory adapter validated it; read once per run)."""
    path = str(host.data.rbee_spec_file)
    if path not in _specs:
        _specs[path] = load_spec(path)
    return _specs[path]


def say(line: str) -> None:
    """A progress line of the deploy (stderr, at once)."""
    print(f"--> {line}", file=sys.stderr, flush=True)


def file_sha256(path: Path) -> str:
    """The sha256 of a local file (an engine wheel), read once per run."""

    def digest() -> str:
        found = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                found.update(block)
        return found.hexdigest()

    return memo("sha256", _file_sums, str(path), digest)


def spec_sha256() -> str:
    """The sha256 of the spec file this run deploys (the one the inventory read), read once per run."""
    path = str(host.data.rbee_spec_file)
    if path not in _file_sums:
        _file_sums[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _file_sums[path]


def remember_state(state: HostState) -> None:
    """Keep what the preflight read on the current host (``rbee.deploy.host_state``)."""
    _states[host.name] = state


def host_state() -> HostState:
    """What the preflight read on the current host (an empty state, as a bare host, before it ran)."""
    return _states.get(host.name, HostState())
