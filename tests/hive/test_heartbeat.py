"""HeartbeatSender against a real HTTP receiver (and against nothing)."""

from __future__ import annotations

import asyncio
import time

from rbee_runtime.common.contracts import Heartbeat, Resources, WorkerInfo, WorkerState
from rbee_runtime.common.ports import free_port
from rbee_runtime.hive.heartbeat import HeartbeatSender
from tests.support.stubs import QueenStub

S = WorkerState


def _worker(state: WorkerState) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        worker_id="w1", hive_id="h", model_id="m", url="http://x:1", state=state, started_at=now, last_activity=now
    )


def _beat(workers: list[WorkerInfo]) -> Heartbeat:
    res = Resources(ram_total_bytes=1, ram_available_bytes=1, disk_total_bytes=1, disk_available_bytes=1, cpu_count=1)
    return Heartbeat(
        hive_id="h", url="http://h:1", version="0", backends=["cpu"], resources=res, models=["m"], workers=workers
    )


def test_stopped_worker_is_reported_once_and_changes_wake_the_loop(queen: QueenStub) -> None:
    current: list[WorkerInfo] = [_worker(S.IDLE)]

    async def build() -> Heartbeat:
        return _beat(list(current))

    async def scenario() -> None:
        sender = HeartbeatSender(queen.url, interval_s=30.0, build=build, credential="key")
        sender.start()
        await asyncio.sleep(0.3)
        assert len(queen.snapshot()) == 1  # the first beat is sent at once, the next only in 30 s
        stopped = _worker(S.STOPPED)
        current.clear()
        sender.on_worker_change(_worker(S.DRAINING), stopped)  # the registry forgot it already
        await asyncio.sleep(0.3)
        sender.on_worker_change(_worker(S.IDLE), _worker(S.BUSY))  # idle/busy: no immediate beat
        await asyncio.sleep(0.3)
        await sender.close(final=True)

    asyncio.run(scenario())
    beats = queen.snapshot()
    assert [[w["state"] for w in b["workers"]] for b in beats] == [["idle"], ["stopped"], []]
    assert queen.headers[0]["authorization"] == "Bearer key"


def test_unreachable_queen_is_not_fatal() -> None:
    async def build() -> Heartbeat:
        return _beat([])

    async def scenario() -> bool:
        sender = HeartbeatSender(f"http://127.0.0.1:{free_port()}", interval_s=0.05, build=build)
        sender.start()
        await asyncio.sleep(0.3)
        ok = await sender.send_once()
        await sender.close(final=False)
        return ok

    assert asyncio.run(scenario()) is False


def test_a_hive_whose_port_is_taken_exits_without_reporting(queen: QueenStub, tmp_path) -> None:
    """It must not look alive to the queen between restarts: it listens before it heartbeats."""
    import json
    import socket
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config = tmp_path / "hive.json"
    config.write_text(json.dumps({
        "hive_id": "h", "host": "127.0.0.1", "port": taken.getsockname()[1], "queen_url": queen.url,
        "data_dir": str(tmp_path / "data"), "heartbeat_interval_s": 0.2,
    }))  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rbee_runtime.hive", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 1 and "cannot listen on 127.0.0.1:" in done.stderr
    assert queen.snapshot() == []
