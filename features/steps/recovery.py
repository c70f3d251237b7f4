"""Steps of failure recovery: crashing and freezing workers, a restarted or frozen hive, draining."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
from pytest_bdd import given, parsers, then, when

from features.steps.inference import ask, worker_counters
from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import Freezer, ProcessPool
from tests.support.services import Cluster, start_cluster
from tests.support.sse import error_code
from tests.support.waiting import gone, wait_until
from tests.support.worker_api import openai_body, post_generation


@given(
    parsers.parse(
        'a cluster whose hive keeps 1 worker of "{model}" with a context of {ctx:d} tokens '
        "and turns stale after {stale:g} second without heartbeat"
    ),
    target_fixture="cluster",
)
def cluster_turning_stale(processes: ProcessPool, tiny_model_path: Path, model: str, ctx: int, stale: float) -> Cluster:
    assert model == TINY_MODEL_ID
    return start_cluster(processes, tiny_model_path, workers=1, queen={"stale_timeout_s": stale},
                         hive={"ctx_size": ctx})  # fmt: skip


@given(parsers.parse('a cluster whose hive has a worker of "{model}" that it did not start'), target_fixture="cluster")
def cluster_with_external_worker(
    scene: SimpleNamespace, processes: ProcessPool, tiny_model_path: Path, model: str
) -> Cluster:
    assert model == TINY_MODEL_ID
    cluster = start_cluster(processes, tiny_model_path, workers=0, external=("ext-drain",))
    (scene.external,) = cluster.workers_started
    (worker,) = cluster.serving(model)
    assert worker["worker_id"] == "ext-drain" and worker["managed_by"] == "external", worker
    return cluster


# --------------------------------------------------------------------------- failover


@given("both workers are frozen")
def both_frozen(scene: SimpleNamespace, cluster: Cluster, freezer: Freezer) -> None:
    scene.pair = cluster.serving()
    assert len(scene.pair) == 2
    scene.baseline = {w["worker_id"]: worker_counters(w) for w in scene.pair}
    for worker in scene.pair:
        freezer.freeze(int(worker["pid"]))


@when("the queen has sent it to one of the frozen workers")
def queen_chose(scene: SimpleNamespace, cluster: Cluster) -> None:
    chosen = wait_until(
        lambda: next((w for w in cluster.queen.workers() if w["in_flight"] == 1), None), 5, "the queen to pick a worker"
    )
    (scene.other,) = [w for w in scene.pair if w["worker_id"] != chosen["worker_id"]]
    scene.chosen = chosen
    assert not scene.stream.opened.is_set(), "the request was answered by a frozen worker"


@when("the other worker resumes and the chosen one is killed")
def other_resumes_chosen_killed(scene: SimpleNamespace, freezer: Freezer) -> None:
    freezer.thaw(int(scene.other["pid"]))
    os.kill(int(scene.chosen["pid"]), signal.SIGKILL)
    freezer.frozen.discard(int(scene.chosen["pid"]))


@then(parsers.parse("the queen counted {count:d} failover"))
def failovers_counted(cluster: Cluster, count: int) -> None:
    assert cluster.queen.metric("rbee_queen_failovers_total", model=TINY_MODEL_ID) == count


@then(parsers.parse("the other worker generated the {count:d} tokens"))
def other_generated(scene: SimpleNamespace, count: int) -> None:
    before = scene.baseline[scene.other["worker_id"]]["tokens_generated_total"]
    assert worker_counters(scene.other)["tokens_generated_total"] == before + count


# --------------------------------------------------------------------------- hive restart


def live_workers(cluster: Cluster) -> dict[str, int]:
    return {w["worker_id"]: w["pid"] for w in cluster.hive.workers() if w["state"] in ("idle", "busy")}


@when("the hive process is killed while the stream runs, and started again")
def hive_restarted(scene: SimpleNamespace, cluster: Cluster) -> None:
    scene.before = live_workers(cluster)
    assert len(scene.before) == 2, scene.before
    assert worker_counters(scene.worker)["slots_busy"] == 1, "the stream was over before the hive was killed"
    cluster.hive.proc.popen.kill()
    assert cluster.hive.proc.wait(10) == -signal.SIGKILL
    for pid in scene.before.values():
        assert not gone(psutil.Process(pid)), f"worker {pid} died with its hive"
    cluster.hive.restart()


@then("the hive lists the same workers with the same process ids")
def same_workers(scene: SimpleNamespace, cluster: Cluster) -> None:
    assert live_workers(cluster) == scene.before
    assert "re-adopted worker" in cluster.hive.proc.log()


@then("a new request is served by one of those workers")
def served_by_those(scene: SimpleNamespace, cluster: Cluster) -> None:
    expected = getattr(scene, "before", None)
    workers = wait_until(lambda: cluster.serving(), 10, "a routable worker at the queen")
    if expected is not None:
        assert {w["worker_id"]: w["pid"] for w in cluster.queen.workers()} == expected
    before = sum(worker_counters(w)["tokens_generated_total"] for w in workers)
    response = ask(cluster, max_tokens=5)
    assert response.status_code == 200, response.text
    assert sum(worker_counters(w)["tokens_generated_total"] for w in workers) == before + 5


# --------------------------------------------------------------------------- a frozen hive


@when("the hive freezes")
def hive_freezes(scene: SimpleNamespace, cluster: Cluster, freezer: Freezer) -> None:
    freezer.freeze(cluster.hive.proc.pid)
    scene.incident_at = time.monotonic()


@when("the hive resumes")
def hive_resumes(cluster: Cluster, freezer: Freezer) -> None:
    freezer.thaw(cluster.hive.proc.pid)


def hive_status(cluster: Cluster) -> str | None:
    hives = cluster.queen.hives()
    return str(hives[0]["status"]) if hives else None


@then("the queen marks the hive stale while the worker is still generating")
def hive_stale(scene: SimpleNamespace, cluster: Cluster) -> None:
    wait_until(lambda: hive_status(cluster) == "stale", 5, "the queen to mark the hive stale")
    assert worker_counters(scene.worker)["slots_busy"] == 1, "the stream was over before the hive turned stale"
    (worker,) = cluster.queen.workers()
    assert worker["in_flight"] == 1 and not worker["routable"], worker


@then(parsers.parse('a new request is refused with {status:d} "{code}"'))
def new_request_refused(cluster: Cluster, status: int, code: str) -> None:
    response = ask(cluster)
    assert response.status_code == status, response.text
    assert error_code(response.json()) == code


@then("the queen marks the hive online again")
def hive_online(cluster: Cluster) -> None:
    wait_until(lambda: hive_status(cluster) == "online", 5, "the queen to mark the hive online")


# --------------------------------------------------------------------------- draining


@when("the worker receives SIGTERM")
def worker_sigterm(scene: SimpleNamespace) -> None:
    scene.external.proc.popen.send_signal(signal.SIGTERM)


@then(parsers.parse('a request sent straight to the worker is refused with {status:d} "{code}"'))
def direct_refused(scene: SimpleNamespace, status: int, code: str) -> None:
    body = openai_body(prompt="Hello", max_tokens=5)

    def refusal() -> httpx.Response | None:  # until the signal is handled its one slot is simply busy
        response = post_generation(scene.external.url, "after-sigterm", body, timeout=10)
        return None if error_code(response.json()) == "ALL_SLOTS_BUSY" else response

    response = wait_until(refusal, 3, "the worker to handle SIGTERM")
    assert response.status_code == status and error_code(response.json()) == code, response.text
    assert worker_counters(scene.worker)["slots_busy"] == 1, "the running stream was not running any more"


@then(parsers.parse("the worker exits with status {status:d}"))
def worker_exits(scene: SimpleNamespace, status: int) -> None:
    assert scene.external.proc.wait(15) == status, scene.external.proc.log()[-3000:]


@then("the hive no longer lists the worker")
def hive_dropped_worker(scene: SimpleNamespace, cluster: Cluster) -> None:
    wait_until(
        lambda: all(w["worker_id"] != scene.external.worker_id for w in cluster.hive.workers()),
        5,
        "the hive to drop the stopped worker",
    )
