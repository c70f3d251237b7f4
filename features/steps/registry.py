"""Steps of the worker registries: the queen's (in process with a hand-moved clock, and a real queen over
HTTP) and the hive's (in process, and a real hive over HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from pytest_bdd import given, parsers, then, when

from features.steps.data_fixtures import Hives, QueenProcess, heartbeat, wait_for, worker
from rbee.tiny_model import ensure_tiny_model
from rbee_runtime.common.contracts import Heartbeat, WorkerReady, WorkerState
from rbee_runtime.hive.registry import InvalidTransitionError, WorkerRegistry
from rbee_runtime.queen.registry import Registry

MODEL_CACHE = Path("~/.cache/rbee/models").expanduser()


class HandClock:
    """A monotonic clock the scenario moves forward by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# --------------------------------------------------------------------------- the queen's registry in process


@given(
    parsers.parse("a queen registry that marks hives stale after {seconds:d} seconds without a heartbeat"),
    target_fixture="queen_registry",
)
def _queen_registry(data_ctx: dict[str, Any], seconds: int) -> Registry:
    data_ctx["clock"] = HandClock()
    return Registry(stale_timeout_s=seconds, clock=data_ctx["clock"])


@given(
    parsers.parse('hive "{hive_id}" reports worker "{first}" idle and worker "{second}" loading for model "{model_id}"')
)
@when(
    parsers.parse('hive "{hive_id}" reports worker "{first}" idle and worker "{second}" loading for model "{model_id}"')
)
def _report_two(queen_registry: Registry, hive_id: str, first: str, second: str, model_id: str) -> None:
    removed = queen_registry.apply_heartbeat(
        heartbeat(hive_id, [worker(first, "idle", model_id, hive_id), worker(second, "loading", model_id, hive_id)])
    )
    assert removed == []


@when(parsers.parse('hive "{hive_id}" reports worker "{worker_id}" in state "{state}"'))
def _report_state(data_ctx: dict[str, Any], queen_registry: Registry, hive_id: str, worker_id: str, state: str) -> None:
    data_ctx["removed"] = queen_registry.apply_heartbeat(heartbeat(hive_id, [worker(worker_id, state)]))


@when(parsers.parse('hive "{hive_id}" reports only worker "{worker_id}"'))
def _report_only(data_ctx: dict[str, Any], queen_registry: Registry, hive_id: str, worker_id: str) -> None:
    known = {w.info.worker_id: w.info for w in queen_registry.workers()}
    data_ctx["removed"] = queen_registry.apply_heartbeat(heartbeat(hive_id, [known[worker_id]]))


@when(parsers.parse('{seconds:d} seconds pass without a heartbeat from "{hive_id}"'))
def _time_passes(data_ctx: dict[str, Any], seconds: int, hive_id: str) -> None:
    data_ctx["clock"].now += seconds


@then(parsers.parse('the queen lists workers "{expected}" on hive "{hive_id}"'))
def _queen_lists(queen_registry: Registry, expected: str, hive_id: str) -> None:
    listed = queen_registry.workers()
    assert [w.info.worker_id for w in listed] == _ids(expected)
    assert {w.info.hive_id for w in listed} == {hive_id}
    hive = next(h for h in queen_registry.hives() if h.heartbeat.hive_id == hive_id)
    assert sorted(w.worker_id for w in hive.heartbeat.workers) == _ids(expected)


@then(parsers.parse('only worker "{worker_id}" takes requests for "{model_id}"'))
def _only_routable(queen_registry: Registry, worker_id: str, model_id: str) -> None:
    assert [w.worker_id for w in queen_registry.routable_workers(model_id)] == [worker_id]


@then(parsers.parse('the queen shows worker "{worker_id}" as "{state}", taking no requests'))
def _shows_not_routable(queen_registry: Registry, worker_id: str, state: str) -> None:
    snap = queen_registry.worker(worker_id)
    assert snap is not None and snap.info.state == WorkerState(state)
    assert not snap.routable
    assert worker_id not in [w.worker_id for w in queen_registry.routable_workers(snap.info.model_id)]


@then(parsers.parse('the queen shows worker "{worker_id}" as "{state}", taking requests'))
def _shows_routable(queen_registry: Registry, worker_id: str, state: str) -> None:
    snap = queen_registry.worker(worker_id)
    assert snap is not None and snap.info.state == WorkerState(state)
    assert snap.routable
    assert worker_id in [w.worker_id for w in queen_registry.routable_workers(snap.info.model_id)]


@then(parsers.parse('hive "{hive_id}" is "{status}"'))
def _hive_status(queen_registry: Registry, hive_id: str, status: str) -> None:
    hives = {h.heartbeat.hive_id: h for h in queen_registry.hives()}
    assert hives[hive_id].status == status
    assert all(w.status == status for w in queen_registry.workers() if w.info.hive_id == hive_id)


@then(parsers.parse('no worker takes requests for "{model_id}"'))
def _none_routable(queen_registry: Registry, model_id: str) -> None:
    assert queen_registry.workers(model_id), "the workers are still known"
    assert queen_registry.routable_workers(model_id) == []
    assert queen_registry.models() == [], "a stale hive offers no model"


@then(parsers.parse('the queen knows neither hive "{hive_id}" nor worker "{worker_id}"'))
def _forgotten(queen_registry: Registry, hive_id: str, worker_id: str) -> None:
    assert hive_id not in [h.heartbeat.hive_id for h in queen_registry.hives()]
    assert queen_registry.worker(worker_id) is None


@then(parsers.parse('the heartbeat removed worker "{worker_id}"'))
def _removed(data_ctx: dict[str, Any], worker_id: str) -> None:
    assert data_ctx["removed"] == [worker_id]


# --------------------------------------------------------------------------- the hive's registry in process


@given(
    parsers.parse('the hive\'s registry holds worker "{worker_id}" in state "{state}"'), target_fixture="hive_registry"
)
def _hive_registry(worker_id: str, state: str) -> WorkerRegistry:
    registry = WorkerRegistry()
    registry.add(worker(worker_id, state))
    return registry


@when(parsers.parse('the hive moves worker "{worker_id}" to "{state}"'))
def _move(data_ctx: dict[str, Any], hive_registry: WorkerRegistry, worker_id: str, state: str) -> None:
    changes: list[tuple[WorkerState, WorkerState]] = []
    hive_registry.subscribe(lambda old, new: changes.append((old.state, new.state)))
    data_ctx["before"] = hive_registry.require(worker_id).state
    try:
        hive_registry.set_state(worker_id, WorkerState(state))
        data_ctx["move"] = "accepted"
    except InvalidTransitionError as exc:
        data_ctx["move"] = "refused"
        data_ctx["move_error"] = str(exc)
    data_ctx.update(changes=changes, after=hive_registry.require(worker_id).state, target=WorkerState(state))


@then(parsers.parse("the move is {verdict}"))
def _move_verdict(data_ctx: dict[str, Any], verdict: str) -> None:
    assert data_ctx["move"] == verdict, data_ctx.get("move_error")
    if verdict == "accepted":
        assert data_ctx["after"] == data_ctx["target"]
        assert data_ctx["changes"] == [(data_ctx["before"], data_ctx["target"])], "listeners hear the change"
    else:
        assert data_ctx["after"] == data_ctx["before"]
        assert data_ctx["changes"] == []
        assert f"{data_ctx['before'].value} → {data_ctx['target'].value} is not allowed" in data_ctx["move_error"]


# --------------------------------------------------------------------------- a real hive: announces


def _ready(worker_id: str, port: int, pid: int) -> dict[str, Any]:
    return WorkerReady(
        worker_id=worker_id,
        url=f"http://127.0.0.1:{port}",
        model_id="tinyllama-q4",
        backend="cpu",
        device=0,
        slots_total=2,
        pid=pid,
        managed_by="external",
    ).model_dump(mode="json")


@given(parsers.parse("a running hive that checks its workers' health every {seconds:d} seconds"))
def _hive_slow_checks(data_ctx: dict[str, Any], hive_procs: Hives, seconds: int) -> None:
    data_ctx["hive"] = hive_procs.start(hive_procs.config("registry-hive", health_check_interval_s=seconds))


@given(parsers.parse('an external worker "{worker_id}" announced itself to the hive from port {port:d}'))
def _announced(data_ctx: dict[str, Any], worker_id: str, port: int) -> None:
    resp = data_ctx["hive"].http.post("/v1/workers/ready", json=_ready(worker_id, port, 4001))
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "idle" and resp.json()["managed_by"] == "external"


@when(parsers.parse('another worker announces itself as "{worker_id}" from port {port:d}'))
def _announce_other(data_ctx: dict[str, Any], worker_id: str, port: int) -> None:
    data_ctx["response"] = data_ctx["hive"].http.post("/v1/workers/ready", json=_ready(worker_id, port, 4002))


@when(parsers.parse('the worker at port {port:d} announces itself again as "{worker_id}"'))
def _announce_again(data_ctx: dict[str, Any], port: int, worker_id: str) -> None:
    data_ctx["response"] = data_ctx["hive"].http.post("/v1/workers/ready", json=_ready(worker_id, port, 4001))


@then(parsers.parse('the hive refuses with 409 "{code}" naming port {first:d} and port {second:d}'))
def _hive_refuses_claim(data_ctx: dict[str, Any], code: str, first: int, second: int) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert f":{first}" in error["message"] and f":{second}" in error["message"]
    assert urlsplit(error["details"]["registered_url"]).port == first
    assert urlsplit(error["details"]["announced_url"]).port == second


@then(parsers.parse('the hive still lists worker "{worker_id}" as "{state}" at port {port:d}'))
def _hive_still_lists(data_ctx: dict[str, Any], worker_id: str, state: str, port: int) -> None:
    listed = {w["worker_id"]: w for w in data_ctx["hive"].workers()}
    assert listed[worker_id]["state"] == state
    assert urlsplit(listed[worker_id]["url"]).port == port and listed[worker_id]["pid"] == 4001


@then("the hive accepts the announce")
def _hive_accepts(data_ctx: dict[str, Any]) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "idle"


# --------------------------------------------------------------------------- a real queen: heartbeats


@given("a running queen", target_fixture="queen")
def _running_queen(queen_procs: Any) -> QueenProcess:
    queen: QueenProcess = queen_procs("registry-queen")
    return queen


def _post_beat(queen: QueenProcess, beat: Heartbeat) -> Any:
    return queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"))


@given(parsers.parse('hive "{hive_id}" sent a heartbeat with worker "{worker_id}" idle'))
def _sent_beat(queen: QueenProcess, hive_id: str, worker_id: str) -> None:
    resp = _post_beat(queen, heartbeat(hive_id, [worker(worker_id, "idle", hive_id=hive_id)]))
    assert resp.status_code == 200, resp.text
    assert resp.json()["rejected_workers"] == []


@when(parsers.parse('hive "{hive_id}" sends a heartbeat with workers "{first}" and "{second}" idle'))
def _send_beat_two(data_ctx: dict[str, Any], queen: QueenProcess, hive_id: str, first: str, second: str) -> None:
    beat = heartbeat(hive_id, [worker(first, "idle", hive_id=hive_id), worker(second, "idle", hive_id=hive_id)])
    data_ctx["response"] = _post_beat(queen, beat)


@then(
    parsers.parse(
        'the queen takes the heartbeat of "{hive_id}" but rejects worker "{worker_id}" as "{code}" owned by "{owner}"'
    )
)
def _takes_but_rejects(data_ctx: dict[str, Any], queen: QueenProcess, hive_id: str, worker_id: str, code: str,
                       owner: str) -> None:  # fmt: skip
    resp = data_ctx["response"]
    assert resp.status_code == 200, resp.text
    (rejected,) = resp.json()["rejected_workers"]
    assert (rejected["worker_id"], rejected["code"], rejected["owner_hive_id"]) == (worker_id, code, owner)
    assert owner in rejected["message"] and hive_id in rejected["message"]
    hives = {h["hive_id"]: h for h in queen.http.get("/v1/hives").json()["hives"]}
    assert hives[hive_id]["status"] == "online" and hives[hive_id]["workers"] == 1
    wait_for(lambda: f"heartbeat of {hive_id}: Worker id {worker_id!r}" in queen.log(), timeout=5,
             what="a warning in the queen's log")  # fmt: skip


@then(parsers.parse('the queen lists worker "{first}" on hive "{first_hive}" and worker "{second}" on hive '
                    '"{second_hive}"'))  # fmt: skip
def _queen_lists_owners(queen: QueenProcess, first: str, first_hive: str, second: str, second_hive: str) -> None:
    listed = {w["worker_id"]: w["hive_id"] for w in queen.http.get("/v1/workers").json()["workers"]}
    assert listed == {first: first_hive, second: second_hive}


# --------------------------------------------------------------------------- removal through a real hive


@given(parsers.parse('a running hive with the tiny model "{model_id}" that reports to the queen'))
def _hive_with_tiny(data_ctx: dict[str, Any], hive_procs: Hives, queen: QueenProcess, model_id: str) -> None:
    path = ensure_tiny_model(MODEL_CACHE)
    config = hive_procs.config(
        "removal-hive",
        queen_url=queen.url,
        models=[{"model_id": model_id, "reference": f"file://{path}", "local_path": str(path)}],
    )
    data_ctx["hive"] = hive_procs.start(config)
    wait_for(lambda: queen.http.get("/v1/hives").json()["hives"], timeout=10, what="the hive's first heartbeat")


@given(parsers.parse('a worker of "{model_id}" started by the hive is idle in both registries'))
def _spawned_idle(data_ctx: dict[str, Any], queen: QueenProcess, model_id: str) -> None:
    hive = data_ctx["hive"]
    started = hive.spawn(model_id)
    assert started["state"] == "loading" and started["managed_by"] == "hive"
    worker_id = started["worker_id"]
    hive.wait_state(worker_id, "idle", timeout=30)

    def queen_sees_idle() -> bool:
        return any(
            w["worker_id"] == worker_id and w["state"] == "idle" and w["routable"]
            for w in queen.http.get("/v1/workers").json()["workers"]
        )

    wait_for(queen_sees_idle, timeout=10, what="the queen to list the worker idle")
    data_ctx["worker"] = started


@when("the worker is removed through the hive")
def _remove_worker(data_ctx: dict[str, Any]) -> None:
    resp = data_ctx["hive"].http.delete(f"/v1/workers/{data_ctx['worker']['worker_id']}")
    assert resp.status_code == 204, resp.text


@then("the hive no longer lists the worker")
def _hive_forgot(data_ctx: dict[str, Any]) -> None:
    assert data_ctx["hive"].worker(data_ctx["worker"]["worker_id"]) is None


@then("the queen no longer lists the worker")
def _queen_forgot(data_ctx: dict[str, Any], queen: QueenProcess) -> None:
    worker_id = data_ctx["worker"]["worker_id"]
    wait_for(
        lambda: all(w["worker_id"] != worker_id for w in queen.http.get("/v1/workers").json()["workers"]),
        timeout=10,
        what="the queen to forget the worker",
    )


@then("the worker's process is gone")
def _process_gone(data_ctx: dict[str, Any]) -> None:
    pid = data_ctx["worker"]["pid"]
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    assert proc.status() == psutil.STATUS_ZOMBIE or "rbee_runtime.worker" not in " ".join(proc.cmdline())
