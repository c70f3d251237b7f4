"""Steps of concurrency: workers registering at once, racing heartbeats, slot races, catalog writes."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from pytest_bdd import given, parsers, then, when

from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.contracts import Heartbeat, Resources, WorkerInfo, WorkerReady, WorkerState
from tests.support.processes import Freezer, ProcessPool
from tests.support.services import (
    Cluster,
    hive_config,
    start_cluster,
    start_hive,
    start_queen,
    start_worker,
    worker_metric,
)
from tests.support.sse import Streams, completion_body, error_code
from tests.support.waiting import wait_until
from tests.support.worker_api import is_end, openai_body, relay_headers, route


def at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together by a barrier; their results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # reported by the step's assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def slot_counters(worker: dict[str, Any]) -> dict[str, float]:
    """What the worker's ``/metrics`` says about its slots: what no sampling of ``/health`` can miss."""
    names = ("rbee_worker_slots_busy_max", "rbee_worker_slots_full_total", "rbee_worker_requests_started_total")
    counters = {name: worker_metric(worker, name) for name in names}
    counters["refused"] = worker_metric(worker, "rbee_worker_requests_refused_total", code="ALL_SLOTS_BUSY")
    return counters


# --------------------------------------------------------------------------- workers registering at once


@given("a queen and a hive without workers", target_fixture="cluster")
def queen_and_empty_hive(processes: ProcessPool, tiny_model_path: Path) -> Cluster:
    return start_cluster(processes, tiny_model_path, workers=0)


@when(parsers.parse('{count:d} workers of "{model}" start at the same time and announce themselves to the hive'))
def workers_start(
    scene: SimpleNamespace, processes: ProcessPool, cluster: Cluster, tiny_model_path: Path, count: int, model: str
) -> None:
    callback = f"{cluster.hive.url}/v1/workers/ready"
    scene.workers = [
        start_worker(processes, f"ext-{i:02d}", tiny_model_path, callback_url=callback, model_id=model, ctx_size=256,
                     managed_by="external", announce_interval=0.5, grace_period=20)
        for i in range(count)
    ]


def by_id(workers: list[dict[str, Any]]) -> Counter[str]:
    return Counter(w["worker_id"] for w in workers)


@then(parsers.parse("the hive lists the {count:d} workers, each exactly once and idle"))
def hive_lists_workers(scene: SimpleNamespace, cluster: Cluster, count: int) -> None:
    wanted = {w.worker_id: w.proc.pid for w in scene.workers}
    assert len(wanted) == count

    def all_idle() -> list[dict[str, Any]] | None:
        for w in scene.workers:
            assert w.proc.alive(), f"{w.worker_id} exited:\n{w.proc.log()[-2000:]}"
        listed = cluster.hive.workers()
        ready = [w for w in listed if w["state"] == "idle"]
        return listed if len(ready) == count else None

    listed = wait_until(all_idle, 60, f"{count} idle workers at the hive", 0.2)
    assert by_id(listed) == Counter(dict.fromkeys(wanted, 1)), by_id(listed)
    assert {w["worker_id"]: w["pid"] for w in listed} == wanted
    assert {w["managed_by"] for w in listed} == {"external"}


@then(parsers.parse("the queen lists the {count:d} workers, each exactly once and routable"))
def queen_lists_workers(scene: SimpleNamespace, cluster: Cluster, count: int) -> None:
    wanted = Counter(w.worker_id for w in scene.workers)

    def routable() -> list[dict[str, Any]] | None:
        workers = cluster.queen.workers()
        return workers if sum(w["routable"] for w in workers) == count else None

    listed = wait_until(routable, 10, f"{count} routable workers at the queen")
    assert by_id(listed) == wanted, by_id(listed)


@when(parsers.parse(
    "{count:d} clients send the workers' ready callbacks again at the same instant, {times:d} times each"
))  # fmt: skip
def ready_callbacks_again(scene: SimpleNamespace, cluster: Cluster, count: int, times: int) -> None:
    assert count == len(scene.workers)
    messages = [
        WorkerReady(worker_id=w.worker_id, url=w.url, model_id=TINY_MODEL_ID, backend="cpu", device=0, slots_total=1,
                    pid=w.proc.pid, managed_by="external").model_dump(mode="json")
        for w in scene.workers
    ]  # fmt: skip

    def announce(i: int) -> list[int]:
        with httpx.Client(timeout=10, trust_env=False) as http:
            return [http.post(f"{cluster.hive.url}/v1/workers/ready", json=messages[i]).status_code
                    for _ in range(times)]  # fmt: skip

    scene.statuses = at_once(count, announce)


@then("every callback is accepted")
def callbacks_accepted(scene: SimpleNamespace) -> None:
    assert all(result == [200] * len(result) for result in scene.statuses), scene.statuses


@then(parsers.parse("the hive still lists the {count:d} workers, each exactly once and none restarted"))
def hive_still_lists(scene: SimpleNamespace, cluster: Cluster, count: int) -> None:
    listed = cluster.hive.workers()
    assert by_id(listed) == Counter(w.worker_id for w in scene.workers)
    assert len(listed) == count
    assert {(w["state"], w["restarts"]) for w in listed} == {("idle", 0)}, listed


@then("the hive's worker table holds one row per worker")
def worker_table(scene: SimpleNamespace, cluster: Cluster) -> None:
    assert cluster.hive.worker_table() == sorted(w.worker_id for w in scene.workers)


# --------------------------------------------------------------------------- racing heartbeats


@given("a queen without hives", target_fixture="queen")
def lone_queen(processes: ProcessPool) -> Any:
    queen = start_queen(processes)
    queen.wait_healthy()
    assert queen.hives() == []
    return queen


def beat(hive_id: str, number: int, workers: int) -> dict[str, Any]:
    """Heartbeat ``number`` of a hive: every worker carries the number (``restarts``) and its parity (state)."""
    now = time.time()
    state = WorkerState.BUSY if number % 2 else WorkerState.IDLE
    infos = [
        WorkerInfo(worker_id=f"{hive_id}-w{j}", hive_id=hive_id, model_id=TINY_MODEL_ID, url=f"http://127.0.0.1:9/{j}",
                   state=state, started_at=now, last_activity=now, restarts=number)
        for j in range(workers)
    ]  # fmt: skip
    resources = Resources(ram_total_bytes=1 << 34, ram_available_bytes=1 << 33, disk_total_bytes=1 << 36,
                          disk_available_bytes=1 << 35, cpu_count=2)  # fmt: skip
    return Heartbeat(hive_id=hive_id, url="http://127.0.0.1:9", version="feature", backends=["cpu"],
                     resources=resources, models=[TINY_MODEL_ID], workers=infos).model_dump(mode="json")  # fmt: skip


@when(parsers.parse(
    "{hives:d} hives send {beats:d} heartbeats each at the same time, every one replacing their {workers:d} "
    "workers, while clients read the queen's worker list"
))  # fmt: skip
def racing_heartbeats(scene: SimpleNamespace, queen: Any, hives: int, beats: int, workers: int) -> None:
    scene.hives, scene.beats, scene.per_hive = hives, beats, workers
    scene.reads = []
    done = threading.Event()

    def read(_: int) -> int:
        with httpx.Client(base_url=queen.url, timeout=10, trust_env=False) as http:
            while not done.is_set():
                response = http.get("/v1/workers")
                assert response.status_code == 200, response.text
                scene.reads.append(response.json()["workers"])
        return len(scene.reads)

    def send(i: int) -> list[int]:
        with httpx.Client(base_url=queen.url, timeout=10, trust_env=False) as http:
            return [http.post("/v1/hives/heartbeat", json=beat(f"hive-{i}", n, workers)).status_code
                    for n in range(beats)]  # fmt: skip

    readers = threading.Thread(target=lambda: at_once(2, read))
    readers.start()
    scene.statuses = at_once(hives, send)
    done.set()
    readers.join(timeout=30)
    assert all(result == [200] * beats for result in scene.statuses), scene.statuses


@then("every read showed the workers of each hive from one single heartbeat")
def reads_consistent(scene: SimpleNamespace) -> None:
    assert len(scene.reads) >= 10, f"only {len(scene.reads)} reads happened during the race"
    for workers in scene.reads:
        ids = [w["worker_id"] for w in workers]
        assert len(ids) == len(set(ids)), f"a worker listed twice: {ids}"
        per_hive: dict[str, list[dict[str, Any]]] = {}
        for w in workers:
            per_hive.setdefault(w["hive_id"], []).append(w)
        for hive_id, listed in per_hive.items():
            numbers = {w["restarts"] for w in listed}
            assert len(listed) == scene.per_hive and len(numbers) == 1, f"{hive_id} torn: {listed}"
            (number,) = numbers
            assert {w["state"] for w in listed} == {"busy" if number % 2 else "idle"}, listed


@then(parsers.parse("the queen lists {count:d} workers, each exactly once, as the last heartbeat of their hive said"))
def final_registry(scene: SimpleNamespace, queen: Any, count: int) -> None:
    workers = queen.workers()
    assert len(workers) == count and len(by_id(workers)) == count, by_id(workers)
    last = scene.beats - 1
    expected_state = "busy" if last % 2 else "idle"
    assert {(w["restarts"], w["state"]) for w in workers} == {(last, expected_state)}, workers
    assert sorted(h["hive_id"] for h in queen.hives()) == sorted(f"hive-{i}" for i in range(scene.hives))


# --------------------------------------------------------------------------- slot races


@when(parsers.parse("{count:d} clients ask the worker directly for a stream of {tokens:d} tokens at the same instant"))
def race_worker(scene: SimpleNamespace, streams: Streams, cluster: Cluster, count: int, tokens: int) -> None:
    (worker,) = cluster.serving()
    scene.worker, scene.tokens = worker, tokens
    scene.slots_before = slot_counters(worker)
    tag = uuid.uuid4().hex[:8]

    def ask(i: int) -> Any:
        body = openai_body(prompt="Race", max_tokens=tokens)
        return streams.open(worker["url"] + route(body), body, relay_headers(f"race-{tag}-{i}"))

    scene.race = at_once(count, ask)
    for stream in scene.race:
        stream.wait_open()


@then(parsers.parse('exactly {started:d} streams start and {refused:d} clients get 503 "{code}" with Retry-After'))
def race_outcome(scene: SimpleNamespace, started: int, refused: int, code: str) -> None:
    statuses = Counter(stream.status for stream in scene.race)
    assert statuses == Counter({200: started, 503: refused}), statuses
    for stream in scene.race:
        if stream.status == 503:
            assert error_code(stream.error_body) == code, stream.error_body
            assert stream.headers["retry-after"] == "1"
            assert stream.error_body["error"]["details"] == {"slots_total": started, "slots_busy": started}
    scene.winners = [stream for stream in scene.race if stream.status == 200]


@then(parsers.parse("the {count:d} streams complete with {tokens:d} tokens"))
def winners_complete(scene: SimpleNamespace, count: int, tokens: int) -> None:
    assert len(scene.winners) == count
    for stream in scene.winners:
        events = stream.read_to_end(30)
        assert events[-2] == "[DONE]" and is_end(events[-3]), events[-3:]
        assert events[-3]["tokens_out"] == tokens and len(stream.tokens()) == tokens


@then(parsers.parse("the worker never ran more than {slots:d} generations at once"))
def never_more_than(scene: SimpleNamespace, slots: int) -> None:
    before, after = scene.slots_before, slot_counters(scene.worker)
    assert after["rbee_worker_slots_busy_max"] == slots, after  # the most at once, since the worker started
    assert after["rbee_worker_slots_full_total"] > before["rbee_worker_slots_full_total"], (before, after)
    started = after["rbee_worker_requests_started_total"] - before["rbee_worker_requests_started_total"]
    assert started == len([s for s in scene.race if s.status == 200]), (started, before, after)


@when(parsers.parse("{count:d} clients stream a completion of {tokens:d} tokens through the queen at the same instant"))
def race_queen(scene: SimpleNamespace, streams: Streams, cluster: Cluster, freezer: Freezer, count: int,
               tokens: int) -> None:  # fmt: skip
    """The worker is frozen while the requests arrive: whatever the machine's speed, none can end before
    all have reached the queen, so the queen must hold those beyond the slots (seen in its queue depth)."""
    (worker,) = cluster.serving()
    scene.worker, scene.tokens = worker, tokens
    scene.slots_before = slot_counters(worker)
    freezer.freeze(int(worker["pid"]))
    scene.race = at_once(count, lambda _: streams.open(f"{cluster.api}/completions", completion_body(tokens)))

    def queued() -> float:
        depth = cluster.queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID)
        in_flight = (cluster.queen.worker(worker["worker_id"]) or {}).get("in_flight")
        return depth if depth + worker["slots_total"] == count and in_flight == worker["slots_total"] else 0

    try:  # quickly: the queen gives the frozen worker request_timeout_s to answer
        scene.most_queued = wait_until(queued, 1.5, f"{count} requests at the queen, the ones beyond the slots queued")
    finally:
        freezer.thaw(int(worker["pid"]))


@then(parsers.parse("all {count:d} streams complete with {tokens:d} tokens"))
def all_complete(scene: SimpleNamespace, count: int, tokens: int) -> None:
    assert len(scene.race) == count
    for stream in scene.race:
        assert stream.wait_open(30) == 200, stream.error_body
        events = stream.read_to_end(30)
        assert events[-2] == "[DONE]", events[-3:]
        assert len(stream.tokens()) == tokens
        assert events[-3]["choices"][0]["finish_reason"] == "length"


@then("some requests waited in the queen's queue")
def some_waited(scene: SimpleNamespace, cluster: Cluster) -> None:
    assert scene.most_queued >= 1, "no request ever waited in the queue"
    refused = slot_counters(scene.worker)["refused"] - scene.slots_before["refused"]
    assert refused == 0, f"the queen sent the worker {refused} request(s) it had no slot for"
    assert cluster.queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID) == 0


# --------------------------------------------------------------------------- catalog


@given("a hive without a queen and with an empty catalog", target_fixture="hive")
def lone_hive(processes: ProcessPool, tiny_model_path: Path) -> Any:
    hive = start_hive(processes, hive_config(processes.workdir, "hive", models=[], placements=[]), wait=True)
    assert hive.get("/v1/models") == {"models": []}
    return hive


@when(parsers.parse(
    "{clients:d} clients register the same {shared:d} models and one model of their own at the same instant"
))  # fmt: skip
def register_at_once(scene: SimpleNamespace, hive: Any, tiny_model_path: Path, clients: int, shared: int) -> None:
    models_dir = hive.data_dir / "models"  # the hive registers files of its models folders only
    models_dir.mkdir(parents=True, exist_ok=True)
    tiny_model_path = Path(shutil.copy(tiny_model_path, models_dir))

    def body(name: str) -> dict[str, str]:
        return {"model_id": name, "reference": f"file:{tiny_model_path}", "local_path": str(tiny_model_path)}

    def register(i: int) -> list[int]:
        names = [f"shared-{(i + k) % shared}" for k in range(shared)] + [f"own-{i:02d}"]
        with httpx.Client(base_url=hive.url, timeout=30, trust_env=False) as http:
            return [http.post("/v1/models", json=body(name)).status_code for name in names]

    scene.statuses = at_once(clients, register)
    scene.expected = {f"shared-{k}" for k in range(shared)} | {f"own-{i:02d}" for i in range(clients)}


@then("every registration is accepted")
def registrations_accepted(scene: SimpleNamespace) -> None:
    assert all(isinstance(r, list) and set(r) == {201} for r in scene.statuses), scene.statuses


@then(parsers.parse("the catalog lists {count:d} models, each exactly once"))
def catalog_lists(scene: SimpleNamespace, hive: Any, count: int) -> None:
    listed = Counter(m["model_id"] for m in hive.get("/v1/models")["models"])
    assert set(listed) == scene.expected and len(listed) == count, listed
    assert set(listed.values()) == {1}, listed


@then("the hive logged no database error")
def no_database_error(hive: Any) -> None:
    log = hive.proc.log()
    for bad in ("database is locked", "sqlite3.", "Traceback", " ERROR "):
        assert bad not in log, f"{bad!r} in the hive's log:\n{log[-3000:]}"
