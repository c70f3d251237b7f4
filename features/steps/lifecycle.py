"""Steps of the lifecycle: cascading shutdown (hive, ``rbee up``) and the idle timeout of workers."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
from pytest_bdd import given, parsers, then, when

from features.steps.inference import ask, worker_counters
from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool
from tests.support.services import Cluster, local_spec, start_cluster, start_rbee_up
from tests.support.waiting import gone, wait_until


def worker_processes(pid: int) -> list[psutil.Process]:
    """The worker processes among the descendants of ``pid``."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if "rbee_runtime.worker" in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            continue
    return found


# --------------------------------------------------------------------------- a hive's SIGTERM


@given(parsers.parse('the hive started one more worker of "{model}" on request'))
def hive_spawned_one(cluster: Cluster, model: str) -> None:
    placed = len(cluster.serving(model))
    response = cluster.hive.http.post("/v1/workers", json={"model_id": model})
    assert response.status_code == 202, response.text
    cluster.wait_serving(placed + 1, model)


@when("the hive receives SIGTERM")
def hive_sigterm(scene: SimpleNamespace, cluster: Cluster) -> None:
    scene.worker_procs = worker_processes(cluster.hive.proc.pid)
    scene.hive_workers = [w["worker_id"] for w in cluster.hive.workers()]
    cluster.hive.proc.popen.send_signal(signal.SIGTERM)
    scene.incident_at = time.monotonic()


@then(parsers.parse("the hive stops its {count:d} workers and exits within {seconds:d} seconds"))
def hive_exits(scene: SimpleNamespace, cluster: Cluster, count: int, seconds: int) -> None:
    code = cluster.hive.proc.wait(seconds)
    log = cluster.hive.proc.log()
    # uvicorn re-raises the SIGTERM once the shutdown is complete: -15 is a clean exit, as systemd sees it
    assert code in (0, -signal.SIGTERM), f"status {code}:\n{log[-3000:]}"
    assert f"stopping {count} worker(s)" in log and "Application shutdown complete" in log, log[-3000:]
    assert time.monotonic() - scene.incident_at <= seconds


@then(parsers.parse("none of its {count:d} worker processes is left running"))
def no_worker_left(scene: SimpleNamespace, count: int) -> None:
    assert len(scene.worker_procs) == count, [p.cmdline() for p in scene.worker_procs]
    alive = [p.pid for p in scene.worker_procs if not gone(p)]
    assert alive == [], f"worker processes still running: {alive}"


@then("the queen routes to none of its workers")
def queen_routes_none(scene: SimpleNamespace, cluster: Cluster) -> None:
    listed = {w["worker_id"]: w for w in cluster.queen.workers()}
    assert set(listed) <= set(scene.hive_workers), listed
    assert not [w for w in listed.values() if w["routable"] or w["state"] != "stopped"], listed
    response = ask(cluster)
    assert response.status_code == 503, response.text


# --------------------------------------------------------------------------- rbee up


@given(parsers.parse('a cluster started with "rbee up" from a spec placing one worker of "{model}"'))
def rbee_up(scene: SimpleNamespace, processes: ProcessPool, tiny_model_path: Path, model: str) -> None:
    spec = local_spec(processes.workdir, tiny_model_path, model, slots=1, context=256, max_workers=2,
                      heartbeat="250ms", stale="2s", loading="30s")  # fmt: skip
    running = start_rbee_up(processes, spec, timeout=70)
    scene.up, scene.queen_url = running.proc, running.queen_url


@given(parsers.parse('a client got a completion of "{model}" from it'))
def rbee_up_serves(scene: SimpleNamespace, model: str) -> None:
    response = httpx.post(f"{scene.queen_url}/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 4},
                          timeout=30, trust_env=False)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 4


@when("the user presses Ctrl+C")
def ctrl_c(scene: SimpleNamespace) -> None:
    scene.started = psutil.Process(scene.up.pid).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in scene.started]
    for service in ("rbee_runtime.queen", "rbee_runtime.hive", "rbee_runtime.worker"):
        assert any(service in c for c in commands), f"no {service} among {commands}"
    scene.up.popen.send_signal(signal.SIGINT)


@then(parsers.parse('rbee up exits with status {status:d} and says "{message}"'))
def rbee_up_exits(scene: SimpleNamespace, status: int, message: str) -> None:
    assert scene.up.wait(45) == status, scene.up.log()
    output = scene.up.log()
    assert message in output and "warning" not in output, output


@then("none of the processes it started is left running")
def nothing_left(scene: SimpleNamespace, processes: ProcessPool) -> None:
    alive = [p.pid for p in scene.started if not gone(p)]
    assert alive == [], f"still running: {alive}"
    assert processes.tagged() == [], "a process started by rbee up (or by one of its services) is still running"


# --------------------------------------------------------------------------- idle timeout


@given(
    parsers.parse(
        'a cluster whose hive keeps 1 worker of "{model}", also holds "{other}", '
        "and stops on-demand workers idle for {seconds:g} seconds"
    ),
    target_fixture="cluster",
)
def cluster_with_idle_timeout(
    scene: SimpleNamespace, processes: ProcessPool, tiny_model_path: Path, model: str, other: str, seconds: float
) -> Cluster:
    assert model == TINY_MODEL_ID
    models = [{"model_id": m, "reference": f"file:{tiny_model_path}", "local_path": str(tiny_model_path)}
              for m in (model, other)]  # fmt: skip
    cluster = start_cluster(processes, tiny_model_path, workers=1,
                            hive={"worker_idle_timeout_s": seconds, "models": models})  # fmt: skip
    (scene.placed,) = cluster.serving(model)
    scene.placed_since = time.monotonic()
    return cluster


@when(parsers.parse('a client asks for a completion of "{model}"'))
def client_asks(scene: SimpleNamespace, cluster: Cluster, model: str) -> None:
    assert cluster.serving(model) == [], f"a worker of {model} already runs"
    scene.response = ask(cluster, model=model, max_tokens=5)


@then(parsers.parse('the hive started a worker of "{model}" on demand, which served it'))
def started_on_demand(scene: SimpleNamespace, cluster: Cluster, model: str) -> None:
    assert scene.response.status_code == 200, scene.response.text
    (worker,) = [w for w in cluster.hive.workers() if w["model_id"] == model]
    assert worker["worker_id"] != scene.placed["worker_id"]
    assert worker_counters(worker)["tokens_generated_total"] == 5
    scene.on_demand = worker
    scene.on_demand_proc = psutil.Process(worker["pid"])


@then(parsers.parse("within {seconds:d} seconds the on-demand worker is stopped and its process is gone"))
def on_demand_stopped(scene: SimpleNamespace, cluster: Cluster, seconds: int) -> None:
    worker_id = scene.on_demand["worker_id"]
    wait_until(lambda: all(w["worker_id"] != worker_id for w in cluster.hive.workers()), seconds,
               f"the hive to stop the idle worker {worker_id}", 0.1)  # fmt: skip
    wait_until(lambda: gone(scene.on_demand_proc), 5, f"the process of {worker_id} to exit")
    assert "idle timeout" in cluster.hive.proc.log()


@then(parsers.parse('the queen routes to no worker of "{model}" any more'))
def queen_routes_no(cluster: Cluster, model: str) -> None:
    wait_until(lambda: cluster.serving(model) == [], 5, f"the queen to forget the workers of {model}")


@then(parsers.parse(
    'the placed worker of "{model}" is still idle in the same process after more than {seconds:g} seconds'
))  # fmt: skip
def placed_still_idle(scene: SimpleNamespace, cluster: Cluster, model: str, seconds: float) -> None:
    assert time.monotonic() - scene.placed_since > seconds
    workers: list[dict[str, Any]] = [w for w in cluster.hive.workers() if w["model_id"] == model]
    assert [(w["worker_id"], w["pid"], w["state"]) for w in workers] == [
        (scene.placed["worker_id"], scene.placed["pid"], "idle")
    ], workers
    assert time.time() - workers[0]["last_activity"] > seconds, "the placed worker was not idle that long"


@then(parsers.parse('a client asking for a completion of "{model}" is served by it'))
def placed_serves(scene: SimpleNamespace, cluster: Cluster, model: str) -> None:
    before = worker_counters(scene.placed)["tokens_generated_total"]
    response = ask(cluster, model=model, max_tokens=5)
    assert response.status_code == 200, response.text
    assert worker_counters(scene.placed)["tokens_generated_total"] == before + 5
