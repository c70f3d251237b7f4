"""The dashboard's state endpoint, history and error notes, on a queen app in this process (no browser)."""

from __future__ import annotations

import logging
import math

from fastapi.testclient import TestClient

from rbee_runtime.common.contracts import GpuInfo, WorkerState
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.dashboard.events import ClusterWatch, RecentErrors
from rbee_runtime.queen.dashboard.history import History, Sample, quantile
from rbee_runtime.queen.registry import Registry
from tests.support.wire import heartbeat, worker_info

KEY = "sk-dashboard"


def test_state_is_behind_the_keys_and_the_page_is_not() -> None:
    with TestClient(create_app(QueenConfig(api_keys=[KEY]))) as client:
        bare = client.get("/ui/api/state")
        assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
        assert bare.json()["error"]["code"] == "MISSING_API_KEY"
        wrong = client.get("/ui/api/state", headers={"Authorization": "Bearer nope"})
        assert wrong.json()["error"]["code"] == "INVALID_API_KEY"
        ok = client.get("/ui/api/state", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["api_keys"] is True
        for path, kind in (("/ui", "text/html"), ("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                           ("/ui/style.css", "text/css")):  # fmt: skip
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith(kind), path
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert client.get("/ui/../v1/hives").status_code == 401
        assert client.get("/ui/nope.js").json()["error"]["code"] == "NOT_FOUND"


def test_state_joins_hosts_gpus_workers_and_queues() -> None:
    gpu = GpuInfo(index=0, name="RTX 4090", memory_total_bytes=24 << 30, memory_free_bytes=20 << 30, temperature_c=51)
    beat = heartbeat("gpu-box", models=["m"], workers=[worker_info("w1", "m", hive_id="gpu-box", slots=4)])
    beat.resources.gpus = [gpu]
    app = create_app(QueenConfig())
    app.state.queen.registry.apply_heartbeat(beat)  # as POST /v1/hives/heartbeat records it
    with TestClient(app) as client:
        body = client.get("/ui/api/state").json()
    assert body["api_keys"] is False
    [host] = body["hosts"]
    assert host["hive_id"] == "gpu-box" and host["host"] == "gpu-box.invalid" and host["status"] == "online"
    assert host["gpus"][0]["name"] == "RTX 4090" and host["gpus"][0]["temperature_c"] == 51
    [worker] = body["workers"]
    assert (worker["model_id"], worker["slots_busy"], worker["slots_total"], worker["state"]) == ("m", 0, 4, "idle")
    assert worker["uptime_s"] is not None and worker["uptime_s"] >= 0
    [model] = body["models"]
    assert (model["model_id"], model["workers"], model["queued"], model["slots_total"]) == ("m", 1, 0, 4)


def test_quantile_of_histogram_buckets() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert quantile(buckets, 0.5) == 0.1
    p95 = quantile(buckets, 0.95)
    assert p95 is not None and abs(p95 - 0.75) < 1e-9
    assert quantile({0.1: 0.0, math.inf: 0.0}, 0.5) is None
    assert quantile({0.1: 0.0, math.inf: 4.0}, 0.5) == 0.1  # all above the last bound: that bound


def test_rates_come_from_counter_differences() -> None:
    history = History(step_s=5.0, horizon_s=60.0)
    history.add(Sample(at=0.0, wall=1000.0, tokens={"m": 0.0}, requests={("m", "200"): 0.0},
                       ttft_sum={"m": 0.0}, ttft_count={"m": 0.0}))  # fmt: skip
    now = Sample(at=10.0, wall=1010.0, tokens={"m": 100.0}, requests={("m", "200"): 4.0, ("m", "503"): 1.0},
                 ttft_sum={"m": 0.8}, ttft_count={"m": 4.0})  # fmt: skip
    history.add(now)
    rates = history.rates(now, window_s=60.0, ttft_window_s=60.0)
    assert (rates.tokens_per_s, rates.requests_per_s, rates.errors, rates.ttft_avg_s) == (10.0, 0.5, 1, 0.2)
    assert [p.tokens_per_s for p in rates.series] == [10.0]
    assert history.model_rates("m", now, 60.0) == (10.0, 0.5, 0.2)
    assert history.model_rates("other", now, 60.0) == (0.0, 0.0, None)


def test_watch_notes_crashes_restarts_and_stale_hives() -> None:
    registry, errors = Registry(stale_timeout_s=10), RecentErrors()
    watch = ClusterWatch(errors)
    registry.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", hive_id="h1")]))
    watch.observe(registry.hives(), registry.workers())
    assert errors.recent() == []
    crashed = worker_info("w1", hive_id="h1", state=WorkerState.CRASHED)
    crashed.last_error = "worker process was killed by SIGKILL\n--- last lines ---\n..."
    registry.apply_heartbeat(heartbeat("h1", workers=[crashed]))
    watch.observe(registry.hives(), registry.workers())
    assert [e.message for e in errors.recent()] == ["worker w1 (m) on h1 crashed: worker process was killed by SIGKILL"]
    back = crashed.model_copy(update={"state": WorkerState.IDLE, "restarts": 1})
    registry.apply_heartbeat(heartbeat("h1", workers=[back]))
    watch.observe(registry.hives(), registry.workers())  # the crash was already noted
    assert len(errors.recent()) == 1
    again = back.model_copy(update={"restarts": 2})  # a crash between two looks: seen by its restart
    registry.apply_heartbeat(heartbeat("h1", workers=[again]))
    watch.observe(registry.hives(), registry.workers())
    assert "crashed and was restarted" in errors.recent()[0].message


def test_the_queens_warnings_are_recent_errors() -> None:
    with TestClient(create_app(QueenConfig(api_keys=[KEY]))) as client:
        logging.getLogger("rbee_runtime.queen.scheduler").warning("starting a worker for %s failed: %s", "m", "boom")
        errors = client.get("/ui/api/state", headers={"Authorization": f"Bearer {KEY}"}).json()["errors"]
    assert errors[0]["source"] == "queen" and errors[0]["message"] == "starting a worker for m failed: boom"
    logging.getLogger("rbee_runtime.queen.scheduler").warning("after the app stopped")  # its handler is gone
