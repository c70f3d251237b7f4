"""Workers the hive did not start (systemd units, ``--managed-by external``): a real hive, real workers."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rbee_runtime.common.ports import free_port
from tests.support.services import Hives, WorkerProc
from tests.support.sse import worker_generate
from tests.support.stubs import QueenStub
from tests.support.waiting import pid_alive, wait_until

MODEL_ID = "rbee-tiny"


def _model(path: Path) -> dict[str, Any]:
    return {"model_id": MODEL_ID, "reference": f"file://{path}", "local_path": str(path)}


def _generate(worker_url: str, max_tokens: int = 4) -> None:
    worker_generate(worker_url, "external", max_tokens)


def _ready(worker_id: str, url: str, pid: int, managed_by: str = "external", model_id: str = "ghost-model") -> dict:
    return {
        "worker_id": worker_id,
        "url": url,
        "model_id": model_id,
        "backend": "cpu",
        "device": 0,
        "slots_total": 2,
        "pid": pid,
        "managed_by": managed_by,
    }


def test_external_announce_registers_then_unreachable_is_crashed_then_dropped(
    hives: Hives, queen: QueenStub
) -> None:
    """No engine needed: the 'worker' is only an announce whose URL nobody answers."""
    hive = hives.start(hives.config("ext-api", queen_url=queen.url, external_worker_drop_s=1.5))
    url = f"http://127.0.0.1:{free_port()}"

    unknown_hive_worker = hive.http.post("/v1/workers/ready", json=_ready("w-hive", url, 1, managed_by="hive"))
    assert unknown_hive_worker.status_code == 404
    assert unknown_hive_worker.json()["error"]["code"] == "WORKER_NOT_FOUND"

    resp = hive.http.post("/v1/workers/ready", json=_ready("w-ext", url, 4242))
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert (info["state"], info["managed_by"], info["hive_id"]) == ("idle", "external", "ext-api")
    assert (info["url"], info["pid"], info["slots_total"], info["model_id"]) == (url, 4242, 2, "ghost-model")
    wait_until(lambda: "not in this hive's catalog" in hive.log(), timeout=5, what="a warning about the model")

    crashed = hive.wait_state("w-ext", "crashed", timeout=10)
    assert "managed outside the hive" in crashed["last_error"]
    refused = hive.http.delete("/v1/workers/w-ext")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "WORKER_EXTERNALLY_MANAGED"

    again = hive.http.post("/v1/workers/ready", json=_ready("w-ext", url, 4243))  # systemd restarted it
    assert again.status_code == 200, again.text
    assert (again.json()["state"], again.json()["pid"], again.json()["restarts"]) == ("idle", 4243, 1)

    hive.wait_state("w-ext", "crashed", timeout=10)
    wait_until(lambda: hive.worker("w-ext") is None, timeout=10, what="the unreachable external worker dropped")
    wait_until(lambda: queen.worker_states("w-ext")[-1:] == ["stopped"], timeout=5, what="queen told it left")
    assert queen.worker_states("w-ext") == ["idle", "crashed", "idle", "crashed", "stopped"]


@pytest.mark.engine
def test_external_worker_life_cycle(
    hives: Hives, queen: QueenStub, external_workers: Callable[..., WorkerProc], tiny_model_path: Path
) -> None:
    config = hives.config(
        "ext",
        queen_url=queen.url,
        models=[_model(tiny_model_path)],
        max_workers=1,
        worker_idle_timeout_s=1.0,
        external_worker_drop_s=2.0,
    )
    hive = hives.start(config)
    callback = f"{hive.url}/v1/workers/ready"
    ext = external_workers("ext-1", callback, announce_interval=0.5)

    info = hive.wait_state("ext-1", "idle", timeout=20)
    assert (info["managed_by"], info["pid"], info["url"], info["model_id"]) == ("external", ext.pid, ext.url, MODEL_ID)
    wait_until(
        lambda: queen.find(
            lambda b: any(
                w["worker_id"] == "ext-1" and w["state"] == "idle" and w["managed_by"] == "external"
                for w in b["workers"]
            )
        ),
        timeout=5,
        what="a heartbeat carrying the external worker",
    )
    _generate(info["url"])

    # not counted toward max_workers (1), and the idle timeout (1 s) stops only the hive's own worker
    own = hive.spawn(MODEL_ID)
    assert own["managed_by"] == "hive"
    hive.wait_state(own["worker_id"], "idle")
    wait_until(lambda: hive.worker(own["worker_id"]) is None, timeout=10, what="the hive's idle worker stopped")
    still = hive.worker("ext-1")
    assert still is not None and still["state"] == "idle" and ext.alive()

    refused = hive.http.delete("/v1/workers/ext-1")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "WORKER_EXTERNALLY_MANAGED"
    assert "systemd" in error["message"] and "placements" in error["message"]
    assert ext.alive()

    ext.kill()  # SIGKILL: the hive notices through /health only
    crashed = hive.wait_state("ext-1", "crashed", timeout=10)
    assert "managed outside the hive" in crashed["last_error"]
    wait_until(lambda: hive.worker("ext-1") is None, timeout=10, what="the dead external worker dropped")
    assert "crashed" in queen.worker_states("ext-1")

    back = external_workers("ext-1", callback, announce_interval=0.5, port=ext.port)  # systemd restarts it
    revived = hive.wait_state("ext-1", "idle", timeout=20)
    assert revived["pid"] == back.pid and revived["managed_by"] == "external"

    hive.signal(signal.SIGTERM)
    hive.wait_exit(timeout=20)
    assert "hive ext shutting down" in hive.log()
    time.sleep(0.5)
    assert back.alive() and pid_alive(back.pid), "a hive never stops an external worker"
    _generate(back.url)
    assert "stopping worker ext-1" not in hive.log()


@pytest.mark.engine
def test_worker_started_before_its_hive_is_registered(
    hives: Hives, external_workers: Callable[..., WorkerProc]
) -> None:
    config = hives.config("late")  # the model is not in its catalog: listed anyway (with a warning)
    ext = external_workers("early-1", f"http://127.0.0.1:{config['port']}/v1/workers/ready", announce_interval=1)
    wait_until(lambda: "ready callback to" in ext.log(), timeout=20, what="the first (failed) announce")
    hive = hives.start(config)
    since = time.monotonic()
    info = hive.wait_state("early-1", "idle", timeout=10)
    assert time.monotonic() - since < 5
    assert info["managed_by"] == "external" and info["pid"] == ext.pid
    assert "not in this hive's catalog" in hive.log()


@pytest.mark.engine
def test_restarted_hive_readopts_external_worker(
    hives: Hives, external_workers: Callable[..., WorkerProc], tiny_model_path: Path
) -> None:
    config = hives.config("readopt-ext", models=[_model(tiny_model_path)])
    hive = hives.start(config)
    # a long interval: after the restart it is back through the worker table, not through a new announce
    ext = external_workers("ext-r", f"{hive.url}/v1/workers/ready", announce_interval=60)
    hive.wait_state("ext-r", "idle", timeout=20)

    hive.signal(signal.SIGTERM)
    hive.wait_exit()
    assert ext.alive()
    hive2 = hives.start(config)
    workers = hive2.workers()  # re-adoption happens before the hive answers HTTP
    assert [(w["worker_id"], w["state"], w["managed_by"], w["pid"]) for w in workers] == [
        ("ext-r", "idle", "external", ext.pid)
    ]
    assert ext.log().count("ready callback accepted") == 1
