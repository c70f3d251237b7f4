"""Queen, hive and worker under a notify socket, as systemd runs them (``Type=notify``): READY only when ready.

Real processes, a real datagram socket in ``$NOTIFY_SOCKET``; the sender pid of each message is checked as
``NotifyAccess=main`` does. A worker is ready once its model is loaded and its own ``/health`` answered; a
worker whose model cannot load never says READY and exits 1 with the reason in its status and its log.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.ports import free_port
from tests.ops.notify_socket import NotifySocket
from tests.support.processes import ProcessPool
from tests.support.services import hive_config, start_hive, start_queen, start_worker
from tests.support.waiting import wait_until


def _under_systemd(monkeypatch: pytest.MonkeyPatch, sock: NotifySocket, watchdog_usec: int | None = None) -> None:
    """The environment systemd gives a service (the processes started next inherit it)."""
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)
    if watchdog_usec:
        monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))


@pytest.mark.engine
def test_a_worker_says_ready_once_its_model_is_loaded_and_its_health_answers(
    processes: ProcessPool, tiny_model_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    _under_systemd(monkeypatch, notify_socket, watchdog_usec=1_000_000)
    worker = start_worker(processes, "w-notify", tiny_model_path)
    ready = notify_socket.wait_for("READY", 60)
    assert worker.health()["state"] == "idle"  # READY came after the model loaded and the worker answers
    messages = notify_socket.messages
    loading = next(i for i, m in enumerate(messages) if (m.get("STATUS") or "").startswith("loading model"))
    assert loading < messages.index(ready)
    assert f"loading model {TINY_MODEL_ID} (" in (messages[loading].get("STATUS") or "")
    assert ready.get("STATUS") == f"serving {TINY_MODEL_ID} at {worker.url} (1 slot(s))"
    notify_socket.drain(1.2)  # the watchdog: every half WATCHDOG_USEC, from the event loop
    assert sum(1 for m in notify_socket.messages if m.get("WATCHDOG") == "1") >= 2
    worker.signal(signal.SIGTERM)
    stopping = notify_socket.wait_for("STOPPING", 10)
    assert stopping.get("STATUS") == "draining: 0 generation(s) running"
    assert worker.wait_exit() == 0
    assert {m.pid for m in notify_socket.messages} == {worker.pid}


@pytest.mark.engine
@pytest.mark.parametrize("broken", ["truncated", "missing"])
def test_a_worker_whose_model_cannot_load_never_says_ready_and_exits_1_with_the_reason(
    processes: ProcessPool, tiny_model_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, broken: str,
) -> None:  # fmt: skip
    model = tmp_path / "broken.gguf"
    if broken == "truncated":
        model.write_bytes(tiny_model_path.read_bytes()[:4096])
    _under_systemd(monkeypatch, notify_socket)
    worker = start_worker(processes, "w-broken", model)
    assert worker.wait_exit(timeout=60) == 1
    notify_socket.drain(0.2)
    assert not [m for m in notify_socket.messages if m.get("READY")], notify_socket.messages
    failed = [s for s in notify_socket.statuses() if s.startswith("load failed [")]
    assert failed and str(model) in failed[-1], notify_socket.statuses()
    assert failed[-1].split("]: ", 1)[1] in worker.log()  # the same reason in the log (the journal)


def test_a_hive_says_ready_after_its_first_heartbeat_even_when_the_queen_is_away(
    processes: ProcessPool, tiny_model_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ready: catalog open, listening, first heartbeat tried; the status says the queen is unreachable. The
    workers it starts do not inherit the notify socket (systemd would refuse their messages)."""
    _under_systemd(monkeypatch, notify_socket, watchdog_usec=2_000_000)
    away = f"http://127.0.0.1:{free_port()}"
    config = hive_config(processes.workdir, "h-notify", model_path=tiny_model_path, queen_url=away,
                         placements=[{"model_id": TINY_MODEL_ID, "replicas": 1, "slots": 1}])  # fmt: skip
    hive = start_hive(processes, config)
    ready = notify_socket.wait_for("READY", 30)
    assert hive.health()  # listening when it said so
    status = ready.get("STATUS") or ""
    assert status.startswith(f"listening on {hive.url}; "), status
    assert "; queen unreachable since " in status and away in status, status
    worker = wait_until(lambda: next(iter(hive.workers()), None), 30, "the placed worker")
    environ = Path(f"/proc/{worker['pid']}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]
    hive.signal(signal.SIGTERM)
    assert notify_socket.wait_for("STOPPING", 10).get("STATUS") == "stopping (SIGTERM)"
    hive.wait_exit(30)
    assert {m.pid for m in notify_socket.messages} == {hive.pid}


def test_the_queen_is_ready_once_listening_and_its_status_follows_the_hives(
    processes: ProcessPool, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    queen = start_queen(processes, env={"NOTIFY_SOCKET": notify_socket.address})
    ready = notify_socket.wait_for("READY", 30)
    assert httpx.get(f"{queen.url}/health", timeout=5).status_code == 200
    assert ready.get("STATUS") == f"listening on {queen.url}; no hive online"
    start_hive(processes, hive_config(tmp_path, "h-status", queen_url=queen.url))
    online = f"listening on {queen.url}; 1 hive(s) online, 0 worker(s) ready"
    notify_socket.wait_for("STATUS", 15, value=online)  # looked at every 5 s, sent when it changed
    queen.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING", 10)
    assert {m.pid for m in notify_socket.messages} == {queen.pid}
