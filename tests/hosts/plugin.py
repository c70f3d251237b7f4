"""pytest plugin: real SSH + systemd test hosts (``rbee.testhosts``) for the whole session.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.hosts.plugin"]``. Then::

    def test_deploy(test_hosts):               # h1..h3 are up (10.210.0.11..13)
        assert test_hosts.ssh("h1", "hostname").stdout.strip() == "h1"

A test that takes ``test_hosts`` gets the ``hosts`` marker (``-m "not hosts"`` leaves them out).
Without ``$RBEE_REQUIRE_HOSTS`` they are skipped, with the reason, when the tests do not run as root or
when the host packages (systemd-nspawn, mmdebstrap, nftables) cannot be installed.

``RBEE_REQUIRE_HOSTS=1`` (``scripts/test`` sets it, so CI cannot go green by skipping): no selected
test may skip. A run where the test hosts cannot boot, or where any selected test would be skipped
because a tool is missing (``systemd-analyze``, ``ansible-playbook``, ``ansible-lint``, ``molecule``, the
engine, ...: every ``skipif`` whose condition holds) stops at collection with a ``UsageError`` naming
what is missing and which tests need it; a skip that only shows at run time (``pytest.skip`` in a
fixture or test) is reported as a failure. Asking for a subset on purpose still works: deselect
(``-m "not hosts"``, ``-k``, paths) or run without the variable. The first
session on a machine builds the rootfs (apt + mmdebstrap, ~2 min); later sessions boot in ~4 s.
``$RBEE_TESTHOSTS_COUNT`` sets how many hosts boot (default 3); ``$RBEE_TESTHOSTS_RELEASES`` their Debian
releases (``bookworm,trixie``: h1 bookworm, the rest trixie; default all bookworm); ``$RBEE_TESTHOSTS_DIR``
the work folder. A test that needs other releases than the session's takes ``hosts_with_releases``::

    def test_mixed(hosts_with_releases):
        hosts = hosts_with_releases("bookworm", "trixie")   # h1 bookworm, h2 trixie (h3: trixie too)

and the hosts it changed get the session's releases back (fresh disks) after the test.
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
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from rbee.testhosts import TestHosts, releases
from rbee.testhosts.packages import PackagesError, ensure_packages

COUNT_ENV = "RBEE_TESTHOSTS_COUNT"
RELEASES_ENV = releases.ENV
REQUIRE_ENV = "RBEE_REQUIRE_HOSTS"
FIXTURE = "test_hosts"
MARKER = "hosts"

log = logging.getLogger("rbee.testhosts")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: needs the real SSH + systemd test hosts (root, systemd-nspawn); see tests/hosts"
    )
    if required() and not config.pluginmanager.has_plugin(_NoSkips.NAME):
        config.pluginmanager.register(_NoSkips(), _NoSkips.NAME)


def required() -> bool:
    """True when ``$RBEE_REQUIRE_HOSTS`` is 1: every selected test must run (no skips)."""
    return os.environ.get(REQUIRE_ENV) == "1"


def unavailable_reason() -> str | None:
    """Why test hosts cannot run here at all (checked before any install), or None."""
    if not sys.platform.startswith("linux"):
        return "test hosts need Linux (systemd-nspawn, network namespaces)"
    if os.geteuid() != 0:
        return "test hosts need root (mounts, network namespaces, cgroups): run the tests as root"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use the hosts, and skip them (with the reason) where hosts cannot run.

    Under ``RBEE_REQUIRE_HOSTS=1`` nothing is skipped here: ``_NoSkips`` fails the run instead.
    """
    reason = None if required() else unavailable_reason()
    for item in items:
        if FIXTURE in getattr(item, "fixturenames", ()) and item.get_closest_marker(MARKER) is None:
            item.add_marker(MARKER)
        if reason is not None and item.get_closest_marker(MARKER) is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def _skip_reason(item: pytest.Item) -> str | None:
    """Why ``item`` would be skipped by a ``skip`` or ``skipif`` marker (conditions given as booleans), or None."""
    for mark in item.iter_markers("skip"):
        return str(mark.kwargs.get("reason") or (mark.args[0] if mark.args else "unconditional skip"))
    for mark in item.iter_markers("skipif"):
        conditions = mark.args or ((mark.kwargs["condition"],) if "condition" in mark.kwargs else ())
        if any(isinstance(c, bool) and c for c in conditions):
            return str(mark.kwargs.get("reason") or "skipif condition holds")
    return None


class _NoSkips:
    """``RBEE_REQUIRE_HOSTS=1``: what a test would skip on is missing here, so the run fails, naming it."""

    NAME = "rbee-require-hosts"

    @pytest.hookimpl(trylast=True)  # after -m/-k deselection and after every other plugin added its skips
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        missing: dict[str, list[str]] = {}
        hosts_reason = unavailable_reason()
        for item in items:
            if hosts_reason is not None and item.get_closest_marker(MARKER) is not None:
                missing.setdefault(hosts_reason, []).append(item.nodeid)
            elif (why := _skip_reason(item)) is not None:
                missing.setdefault(why, []).append(item.nodeid)
        if not missing:
            return
        lines = [f"{REQUIRE_ENV}=1 (set by scripts/test): these selected tests would be skipped, and CI must not "
                 "go green by skipping:"]  # fmt: skip
        for why, nodeids in missing.items():
            files = sorted({n.split("::")[0] for n in nodeids})
            lines.append(f"  - {why}: {len(nodeids)} test(s) in {', '.join(files)}")
        lines.append(
            "Install what is missing (scripts/bootstrap.sh dev; test hosts need root and apt), or choose a subset "
            f'on purpose: deselect (-m "not {MARKER}", -k, a path) or run without {REQUIRE_ENV}=1.'
        )
        raise pytest.UsageError("\n".join(lines))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        """A skip that only shows at run time (``pytest.skip``/``importorskip``) becomes a failure with its reason."""
        outcome = yield
        report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            report.outcome = "failed"
            report.longrepr = f"{REQUIRE_ENV}=1, but this test skipped: {reason}"


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


def _skip_or_fail(reason: str) -> None:
    """Skip (with the reason), or fail under ``RBEE_REQUIRE_HOSTS=1``."""
    if required():
        pytest.fail(f"{REQUIRE_ENV}=1, but the test hosts cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def session_layout() -> tuple[int, tuple[str, ...]]:
    """How many hosts the session boots and their releases (``$RBEE_TESTHOSTS_COUNT``/``_RELEASES``)."""
    count = int(os.environ.get(COUNT_ENV) or 3)
    return count, releases.parse(os.environ.get(RELEASES_ENV, "")) or (releases.DEFAULT,)


@pytest.fixture(scope="session")
def test_hosts() -> Iterator[TestHosts]:
    """h1..hN up (N = $RBEE_TESTHOSTS_COUNT, default 3; $RBEE_TESTHOSTS_RELEASES) for the session, then destroyed."""
    count, wanted = session_layout()  # an unknown release fails here, before anything boots
    reason = unavailable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    try:
        ensure_packages(log.info)
    except PackagesError as exc:
        _skip_or_fail(f"systemd-nspawn cannot be installed here: {exc}")
    hosts = TestHosts(log=log.info)
    with hosts.session_lease(), _down_on_exit(hosts) as state:
        try:
            hosts.down()  # leftovers of an aborted run
            hosts.up(count, releases=wanted)
            yield hosts
        finally:
            hosts.down()
            state["clean"] = True


@pytest.fixture
def hosts_with_releases(test_hosts: TestHosts) -> Iterator[Callable[..., TestHosts]]:
    """``hosts_with_releases("bookworm", "trixie", count=2)``: h1..h<count> run those releases (in order, the
    last one repeating; hosts of another release are recreated). Afterwards the session's hosts and releases
    come back: changed hosts are recreated, hosts beyond the session's count removed."""

    def boot(*wanted: str, count: int | None = None) -> TestHosts:
        test_hosts.up(count or max(len(wanted), session_count), releases=wanted)
        return test_hosts

    session_count, session_releases = session_layout()
    yield boot
    for name in test_hosts.names()[session_count:]:
        test_hosts.remove(name)
    test_hosts.up(session_count, releases=session_releases)
