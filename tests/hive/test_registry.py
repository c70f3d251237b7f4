"""The worker registry: snapshots, checked state transitions, listeners, thread safety."""

from __future__ import annotations

import threading
import time

import pytest

from rbee_runtime.common.contracts import WorkerInfo, WorkerState
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.registry import InvalidTransitionError, WorkerRegistry

S = WorkerState


def _info(worker_id: str = "w1", state: WorkerState = S.LOADING) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        worker_id=worker_id,
        hive_id="h",
        model_id="m",
        url="http://127.0.0.1:1",
        state=state,
        started_at=now,
        last_activity=now,
    )


def test_add_get_list_remove() -> None:
    reg = WorkerRegistry()
    reg.add(_info("w1"))
    reg.add(_info("w2"))
    with pytest.raises(ValueError, match="already"):
        reg.add(_info("w1"))
    assert reg.get("w1") is not None and reg.get("zz") is None
    assert [w.worker_id for w in reg.list()] == ["w1", "w2"]
    assert reg.remove("w1") is not None
    assert reg.remove("w1") is None
    with pytest.raises(ApiError) as err:
        reg.require("w1")
    assert (err.value.status, err.value.code) == (404, "WORKER_NOT_FOUND")


def test_life_cycle_and_listener() -> None:
    reg = WorkerRegistry()
    seen: list[tuple[str, str]] = []
    reg.subscribe(lambda old, new: seen.append((old.state.value, new.state.value)))
    reg.add(_info())
    for state in (S.IDLE, S.BUSY, S.IDLE, S.DRAINING, S.STOPPED):
        reg.set_state("w1", state)
    reg.set_state("w1", S.STOPPED, last_error="same state: fields only")
    assert seen == [
        ("loading", "idle"),
        ("idle", "busy"),
        ("busy", "idle"),
        ("idle", "draining"),
        ("draining", "stopped"),
    ]
    assert reg.require("w1").last_error == "same state: fields only"


def test_crash_and_restart_path() -> None:
    reg = WorkerRegistry()
    reg.add(_info(state=S.IDLE))
    reg.set_state("w1", S.CRASHED, last_error="boom", pid=None)
    reg.set_state("w1", S.LOADING, restarts=1, pid=42)
    info = reg.require("w1")
    assert (info.state, info.restarts, info.pid, info.last_error) == (S.LOADING, 1, 42, "boom")


@pytest.mark.parametrize(
    ("start", "target"),
    [(S.STOPPED, S.IDLE), (S.DRAINING, S.IDLE), (S.CRASHED, S.IDLE), (S.IDLE, S.LOADING)],
)
def test_invalid_transitions(start: WorkerState, target: WorkerState) -> None:
    reg = WorkerRegistry()
    reg.add(_info(state=start))
    with pytest.raises(InvalidTransitionError):
        reg.set_state("w1", target)
    assert reg.require("w1").state == start


def test_snapshots_are_immutable_copies() -> None:
    reg = WorkerRegistry()
    reg.add(_info())
    before = reg.require("w1")
    reg.update("w1", slots_total=4)
    assert before.slots_total == 1 and reg.require("w1").slots_total == 4
    with pytest.raises(ValueError, match="set_state"):
        reg.update("w1", state=S.IDLE)


def test_count_live() -> None:
    reg = WorkerRegistry()
    for i, state in enumerate([S.LOADING, S.IDLE, S.BUSY, S.DRAINING, S.CRASHED]):
        reg.add(_info(f"w{i}", state))
    assert reg.count() == 4


def test_count_by_manager() -> None:
    reg = WorkerRegistry()
    reg.add(_info("own", S.IDLE))
    reg.add(_info("ext", S.IDLE).model_copy(update={"managed_by": "external"}))
    reg.add(_info("ext-dead", S.CRASHED).model_copy(update={"managed_by": "external"}))
    assert (reg.count(), reg.count(managed_by="hive"), reg.count(managed_by="external")) == (2, 1, 1)


def test_replace_skips_the_transition_check_and_notifies() -> None:
    reg = WorkerRegistry()
    seen: list[tuple[str, str]] = []
    reg.subscribe(lambda old, new: seen.append((old.state.value, new.state.value)))
    reg.add(_info(state=S.CRASHED))
    back = reg.replace(_info(state=S.IDLE).model_copy(update={"pid": 7, "managed_by": "external"}))
    assert reg.require("w1") == back and back.pid == 7
    reg.replace(back.model_copy(update={"pid": 8}))  # same state: no notification
    assert seen == [("crashed", "idle")] and reg.require("w1").pid == 8
    with pytest.raises(KeyError):
        reg.replace(_info("nobody"))


def test_concurrent_updates() -> None:
    reg = WorkerRegistry()
    reg.add(_info(state=S.IDLE))

    def flip() -> None:
        for _ in range(500):
            reg.set_state("w1", S.BUSY)
            reg.touch("w1")
            reg.set_state("w1", S.IDLE)

    threads = [threading.Thread(target=flip) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reg.require("w1").state == S.IDLE
