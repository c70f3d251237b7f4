"""rbee_runtime.common.sd_notify against a real AF_UNIX datagram socket, as systemd's notify socket is one."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from rbee_runtime.common.notified_server import starting_longer
from rbee_runtime.common.sd_notify import Notifier, from_environment
from tests.ops.notify_socket import NotifySocket


def test_ready_status_watchdog_and_stopping_arrive_in_order_from_this_process(notify_socket: NotifySocket) -> None:
    sd = Notifier(notify_socket.address, watchdog_usec=4_000_000)
    assert sd.enabled and sd.watchdog_interval_s == 2.0
    sd.status("loading model tiny (1 MiB)")
    sd.ready("serving tiny")
    sd.watchdog()
    sd.stopping("draining: 0 generation(s) running")
    got = [notify_socket.receive(2.0) for _ in range(4)]
    assert [m.fields for m in got if m] == [
        [("STATUS", "loading model tiny (1 MiB)")],
        [("READY", "1"), ("STATUS", "serving tiny")],
        [("WATCHDOG", "1")],
        [("STOPPING", "1"), ("STATUS", "draining: 0 generation(s) running")],
    ]
    assert {m.pid for m in got if m} == {os.getpid()}  # what NotifyAccess=main checks


def test_a_status_is_sent_only_when_it_changes_and_stays_on_one_line(notify_socket: NotifySocket) -> None:
    sd = Notifier(notify_socket.address)
    sd.ready("serving tiny")
    sd.status("serving tiny")
    sd.status("hive unreachable\nsince now")
    notify_socket.drain(0.3)
    assert notify_socket.statuses() == ["serving tiny", "hive unreachable since now"]


def test_a_path_socket_works_too(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    try:
        assert Notifier(str(path)).send(READY=1)
        server.settimeout(2)
        assert server.recv(100) == b"READY=1"
    finally:
        server.close()


def test_without_a_socket_nothing_is_sent_and_nothing_fails() -> None:
    sd = Notifier(None, watchdog_usec=4_000_000)
    assert not sd.enabled and sd.watchdog_interval_s is None
    assert sd.send(READY=1) is False
    sd.ready("x")
    sd.stopping("y")


def test_a_socket_that_went_away_is_no_error() -> None:
    gone = NotifySocket()
    address = gone.address
    gone.close()
    assert Notifier(address).send(READY=1) is False


def test_the_environment_is_read_once_and_cleared_for_the_children() -> None:
    environ = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    sd = from_environment(environ)
    assert sd.address == "\0x" and sd.watchdog_interval_s == 15.0
    assert environ == {"PATH": "/bin"}  # a hive's workers inherit neither the socket nor the watchdog


@pytest.mark.parametrize(
    ("usec", "pid"), [("30000000", "1"), ("0", ""), ("soon", ""), ("", "")],
    ids=["another-process-watchdog", "zero", "not-a-number", "none"],
)  # fmt: skip
def test_no_watchdog_unless_it_is_for_this_process(usec: str, pid: str) -> None:
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": usec, "WATCHDOG_PID": pid}
    assert from_environment(environ).watchdog_interval_s is None


def test_outside_systemd_the_notifier_is_off() -> None:
    assert not from_environment({}).enabled


def test_a_slow_start_extends_the_start_timeout_while_it_runs(notify_socket: NotifySocket) -> None:
    sd = Notifier(notify_socket.address)

    async def slow_start() -> None:
        async with starting_longer(sd, "checking the models' sha256", every_s=0.1):
            await asyncio.sleep(0.35)

    asyncio.run(slow_start())
    sent = len(notify_socket.drain(0.3))
    assert 3 <= sent <= 5, notify_socket.messages
    first = notify_socket.messages[0]
    assert first.fields == [("EXTEND_TIMEOUT_USEC", "300000"), ("STATUS", "checking the models' sha256")]
