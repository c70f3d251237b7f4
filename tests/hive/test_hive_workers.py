"""A real hive process supervising real workers (``rbee_runtime.worker`` on the tiny model)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import HiveProc, Hives
from tests.support.sse import worker_generate
from tests.support.stubs import QueenStub
from tests.support.waiting import pid_alive, wait_until

pytestmark = pytest.mark.engine

MODEL_ID = "rbee-tiny"


def _model(path: Path) -> dict[str, Any]:
    return {"model_id": MODEL_ID, "reference": f"file://{path}", "local_path": str(path)}


def _no_process_left(hives: Hives, hive: HiveProc | None = None) -> None:
    own = {hive.proc.pid} if hive is not None and hive.proc is not None and hive.proc.poll() is None else set()
    wait_until(
        lambda: not [p for p in hives.leftovers() if p.pid not in own],
        timeout=5,
        what="no worker process left",
    )


def _generate(worker_url: str, max_tokens: int = 8) -> str:
    return worker_generate(worker_url, "the hive", max_tokens, temperature=0.0)


def test_spawn_ready_heartbeats_and_delete(hives: Hives, queen: QueenStub, tiny_model_path: Path) -> None:
    hive = hives.start(hives.config("e2e", queen_url=queen.url, max_workers=1))
    models_dir = hive.data_dir / "models"  # POST /v1/models takes files of the hive's models folders only
    models_dir.mkdir(parents=True, exist_ok=True)
    tiny_model_path = Path(shutil.copy(tiny_model_path, models_dir))
    resp = hive.http.post("/v1/models", json=_model(tiny_model_path))
    assert resp.status_code == 201, resp.text
    assert resp.json()["size_bytes"] == tiny_model_path.stat().st_size

    spawned = hive.spawn(MODEL_ID, slots=2)
    wid, pid = spawned["worker_id"], spawned["pid"]
    assert spawned["state"] == "loading" and pid_alive(pid)
    ready = hive.wait_state(wid, "idle")
    assert ready["slots_total"] == 2 and ready["hive_id"] == "e2e" and ready["pid"] == pid
    port = int(ready["url"].rsplit(":", 1)[1])
    assert hive.config["worker_port_first"] <= port <= hive.config["worker_port_last"]
    health = httpx.get(f"{ready['url']}/health", trust_env=False).json()
    assert health["worker_id"] == wid and health["state"] == "idle"
    assert "the hive" not in _generate(ready["url"])  # it serves
    assert (Path(hive.config["data_dir"]) / "logs" / f"{wid}.log").stat().st_size > 0

    refused = hive.http.post("/v1/workers", json={"model_id": MODEL_ID})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "MAX_WORKERS"

    beat = wait_until(
        lambda: queen.find(lambda b: any(w["worker_id"] == wid and w["state"] == "idle" for w in b["workers"])),
        timeout=5,
        what="a heartbeat with the idle worker",
    )
    assert beat["hive_id"] == "e2e" and beat["url"] == hive.url and beat["version"]
    assert "cpu" in beat["backends"] and beat["max_workers"] == 1
    assert beat["resources"]["ram_total_bytes"] > 0 and beat["resources"]["cpu_count"] >= 1
    assert beat["models"] == [MODEL_ID]

    assert hive.http.delete(f"/v1/workers/{wid}").status_code == 204
    assert not pid_alive(pid)
    assert hive.workers() == []
    wait_until(lambda: queen.worker_states(wid)[-1] == "stopped", timeout=5, what="a heartbeat saying stopped")
    _no_process_left(hives, hive)


def test_idle_worker_is_stopped_but_not_while_it_works(hives: Hives, tiny_model_path: Path) -> None:
    hive = hives.start(hives.config("idle", worker_idle_timeout_s=1.5, models=[_model(tiny_model_path)]))
    wid = hive.spawn(MODEL_ID)["worker_id"]
    ready = hive.wait_state(wid, "idle")
    busy_until = time.monotonic() + 2.5
    while time.monotonic() < busy_until:  # requests every 0.3 s keep it alive past the 1.5 s timeout
        _generate(ready["url"], max_tokens=4)
        time.sleep(0.3)
    assert hive.worker(wid) is not None, "a worker in use must not be stopped for idleness"
    quiet_since = time.monotonic()
    wait_until(lambda: hive.worker(wid) is None, timeout=5, what="idle worker stopped")
    assert time.monotonic() - quiet_since >= 0.9
    assert not pid_alive(ready["pid"])
    _no_process_left(hives, hive)


def test_crashed_worker_reported_and_placed_worker_restarted(
    hives: Hives, queen: QueenStub, tiny_model_path: Path
) -> None:
    config = hives.config(
        "crash",
        queen_url=queen.url,
        models=[_model(tiny_model_path)],
        placements=[{"model_id": MODEL_ID, "replicas": 1}],
        max_restarts=1,
        restart_backoff_s=0.5,
    )
    hive = hives.start(config)
    placed = wait_until(
        lambda: next((w for w in hive.workers() if w["state"] == "idle"), None),
        timeout=15,
        what="the placed worker started at boot",
    )
    pid1 = placed["pid"]
    free = hive.spawn(MODEL_ID)
    hive.wait_state(free["worker_id"], "idle")

    os.kill(free["pid"], signal.SIGKILL)
    os.kill(pid1, signal.SIGKILL)

    crashed = hive.wait_state(free["worker_id"], "crashed")
    assert crashed["pid"] is None
    assert "SIGKILL" in crashed["last_error"] and "last lines" in crashed["last_error"]
    restarted = hive.wait_worker(placed["worker_id"], lambda w: w["restarts"] == 1 and w["state"] == "idle")
    assert restarted["pid"] != pid1 and pid_alive(restarted["pid"])
    assert "SIGKILL" in (restarted["last_error"] or "")
    assert not pid_alive(pid1)
    wait_until(
        lambda: "crashed" in queen.worker_states(placed["worker_id"]), timeout=5, what="queen told about the crash"
    )
    time.sleep(0.8)  # longer than the restart back-off: an unplaced worker is not restarted
    again = hive.worker(free["worker_id"])
    assert again is not None and again["state"] == "crashed" and again["restarts"] == 0

    os.kill(restarted["pid"], signal.SIGKILL)  # max_restarts = 1: now it stays down
    hive.wait_state(placed["worker_id"], "crashed")
    time.sleep(0.8)
    final = hive.worker(placed["worker_id"])
    assert final is not None and final["state"] == "crashed" and final["restarts"] == 1

    assert hive.http.delete(f"/v1/workers/{free['worker_id']}").status_code == 204
    assert hive.worker(free["worker_id"]) is None
    _no_process_left(hives, hive)


def test_sigterm_stops_every_worker(hives: Hives, tiny_model_path: Path) -> None:
    config = hives.config(
        "term", models=[_model(tiny_model_path)], placements=[{"model_id": MODEL_ID, "replicas": 1, "slots": 2}]
    )
    hive = hives.start(config)
    extra = hive.spawn(MODEL_ID)
    hive.wait_state(extra["worker_id"], "idle")

    def both_idle() -> list[dict[str, Any]] | None:
        ws = hive.workers()
        return ws if len(ws) == 2 and all(w["state"] == "idle" for w in ws) else None

    workers = wait_until(both_idle, timeout=15, what="both workers idle")
    assert sorted(w["slots_total"] for w in workers) == [1, 2]
    pids = [w["pid"] for w in workers]

    hive.signal(signal.SIGTERM)
    hive.wait_exit(timeout=20)
    assert not [p for p in pids if pid_alive(p)]
    _no_process_left(hives)
    assert "stopping 2 worker(s)" in hive.log()


def test_restarted_hive_readopts_running_worker(hives: Hives, tiny_model_path: Path) -> None:
    config = hives.config("readopt", models=[_model(tiny_model_path)])
    hive = hives.start(config)
    keep = hive.spawn(MODEL_ID)
    lost = hive.spawn(MODEL_ID)
    hive.wait_state(keep["worker_id"], "idle")
    hive.wait_state(lost["worker_id"], "idle")

    hive.signal(signal.SIGKILL)  # the hive dies without stopping its workers
    hive.wait_exit()
    assert pid_alive(keep["pid"]) and pid_alive(lost["pid"])
    os.kill(lost["pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(lost["pid"]), timeout=5, what="lost worker gone")

    hive2 = hives.start(config)
    workers = hive2.workers()
    assert [w["worker_id"] for w in workers] == [keep["worker_id"]]
    assert workers[0]["pid"] == keep["pid"] and workers[0]["state"] == "idle"
    assert "the hive" not in _generate(workers[0]["url"])

    assert hive2.http.delete(f"/v1/workers/{keep['worker_id']}").status_code == 204
    assert not pid_alive(keep["pid"])
    _no_process_left(hives, hive2)


def test_worker_that_fails_to_load_is_crashed_with_its_log(hives: Hives, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))
    hive = hives.start(
        hives.config(
            "broken", models=[{"model_id": "broken", "reference": f"file://{broken}", "local_path": str(broken)}]
        )
    )
    wid = hive.spawn("broken")["worker_id"]
    crashed = hive.wait_state(wid, "crashed", timeout=20)
    assert "exited with status 1" in crashed["last_error"]
    assert "last lines" in crashed["last_error"]
    _no_process_left(hives, hive)


def test_loading_timeout_kills_the_worker(hives: Hives, tiny_model_path: Path) -> None:
    hive = hives.start(hives.config("slow", loading_timeout_s=0.3, models=[_model(tiny_model_path)]))
    spawned = hive.spawn(MODEL_ID)
    crashed = hive.wait_state(spawned["worker_id"], "crashed")
    assert "did not become ready within 0.3 s" in crashed["last_error"]
    assert not pid_alive(spawned["pid"])
    _no_process_left(hives, hive)
