"""pytest plugin: real SSH + systemd test hosts (``rbee.testhosts``) for the whole session.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.hosts.plugin"]``. Then::

    def test_deploy(test_hosts):               # h1..h3 are up (10.210.0.11..13)
        assert test_hosts.ssh("h1", "hostname").stdout.strip() == "h1"

A test that takes ``test_hosts`` gets the ``hosts`` marker (``-m "not hosts"`` leaves them out).
They are skipped, with the reason, only when the tests do not run as root or when the host packages
(systemd-nspawn, mmdebstrap, nftables) cannot be installed; as root in CI they run. The first
session on a machine builds the rootfs (apt + mmdebstrap, ~2 min); later sessions boot in ~4 s.
``$RBEE_TESTHOSTS_COUNT`` sets how many hosts boot (default 3); ``$RBEE_TESTHOSTS_DIR`` the work folder.
The session starts with ``down()`` (leftovers of an aborted run) and always ends with ``down()``:
after the last test, on a failure, on Ctrl-C, on SIGTERM/SIGHUP and at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from rbee.testhosts import TestHosts
from rbee.testhosts.packages import PackagesError, ensure_packages

COUNT_ENV = "RBEE_TESTHOSTS_COUNT"
FIXTURE = "test_hosts"
MARKER = "hosts"

log = logging.getLogger("rbee.testhosts")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: needs the real SSH + systemd test hosts (root, systemd-nspawn); see tests/hosts"
    )


def unavailable_reason() -> str | None:
    """Why test hosts cannot run here at all (checked before any install), or None."""
    if not sys.platform.startswith("linux"):
        return "test hosts need Linux (systemd-nspawn, network namespaces)"
    if os.geteuid() != 0:
        return "test hosts need root (mounts, network namespaces, cgroups): run the tests as root"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use the hosts, and skip them (with the reason) where hosts cannot run."""
    reason = unavailable_reason()
    for item in items:
        if FIXTURE in getattr(item, "fixturenames", ()) and item.get_closest_marker(MARKER) is None:
            item.add_marker(MARKER)
        if reason is not None and item.get_closest_marker(MARKER) is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@contextlib.contextmanager
def _down_on_exit(hosts: TestHosts) -> Iterator[dict[str, bool]]:
    """Tear the hosts down even when the session dies.

    SIGTERM/SIGHUP become Ctrl-C (so ``finally`` blocks run); an atexit hook stays registered until
    the final ``down()`` has completed.
    """

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    state = {"clean": False}  # the fixture sets it once its last down() returned
    atexit.register(hosts.down)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if state["clean"]:
            atexit.unregister(hosts.down)


@pytest.fixture(scope="session")
def test_hosts() -> Iterator[TestHosts]:
    """h1..hN up (N = $RBEE_TESTHOSTS_COUNT, default 3) for the whole session, then destroyed."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        ensure_packages(log.info)
    except PackagesError as exc:
        pytest.skip(f"systemd-nspawn cannot be installed here: {exc}")
    hosts = TestHosts(log=log.info)
    count = int(os.environ.get(COUNT_ENV) or 3)
    with hosts.session_lease(), _down_on_exit(hosts) as state:
        try:
            hosts.down()  # leftovers of an aborted run
            hosts.up(count)
            yield hosts
        finally:
            hosts.down()
            state["clean"] = True
