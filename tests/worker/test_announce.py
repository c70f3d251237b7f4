"""The worker's repeated ready callback (``--announce-interval``, ``--managed-by``): real processes, real HTTP."""

from __future__ import annotations

import itertools
import signal
import time

import httpx
import pytest

from rbee_runtime.common.contracts import WorkerReady
from rbee_runtime.common.ports import free_port
from rbee_runtime.worker.cli import parse_settings
from tests.support.sse import DONE, response_events, worker_generate
from tests.support.stubs import CallbackReceiver
from tests.support.waiting import wait_until
from tests.support.worker_api import openai_body, relay_headers

REQUIRED = ["--worker-id", "w", "--model-id", "m", "--model-path", "/m.gguf"]


def test_cli_announce_and_managed_by_flags() -> None:
    default = parse_settings(REQUIRED)
    assert (default.announce_interval_s, default.managed_by) == (10.0, "hive")
    custom = parse_settings([*REQUIRED, "--announce-interval", "0.5", "--managed-by", "external"])
    assert (custom.announce_interval_s, custom.managed_by) == (0.5, "external")
    assert parse_settings([*REQUIRED, "--announce-interval", "0"]).announce_interval_s == 0
    for bad in (["--announce-interval", "-1"], ["--announce-interval", "nan"], ["--managed-by", "systemd"]):
        with pytest.raises(SystemExit):
            parse_settings([*REQUIRED, *bad])


def test_ready_payload_defaults_to_hive_managed() -> None:
    body = {"worker_id": "w", "url": "u", "model_id": "m", "backend": "cpu", "device": 0, "slots_total": 1, "pid": 1}
    assert WorkerReady.model_validate(body).managed_by == "hive"
    assert WorkerReady.model_validate({**body, "managed_by": "external"}).managed_by == "external"


def _generate(url: str) -> None:
    worker_generate(url)


@pytest.mark.engine
def test_worker_reannounces_periodically(start_worker, callback_receiver: CallbackReceiver) -> None:
    w = start_worker(
        worker_id="w-ann", callback_url=callback_receiver.url, announce_interval=0.3, managed_by="external"
    )
    w.wait_idle()
    wait_until(lambda: len(callback_receiver.received) >= 3, 10, "three announces")
    posts = list(callback_receiver.received)
    assert len(posts) >= 3, w.log()
    bodies = [WorkerReady.model_validate(p["body"]) for p in posts]
    assert all(b == bodies[0] for b in bodies), "every announce carries the same WorkerReady"
    first = bodies[0]
    assert (first.worker_id, first.url, first.pid, first.managed_by) == ("w-ann", w.url, w.proc.pid, "external")
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(posts)]
    assert min(gaps) >= 0.2, f"announces must be paced by the interval, got gaps {gaps}"
    _generate(w.url)  # serving goes on between announces


@pytest.mark.engine
def test_worker_serves_while_hive_is_down_then_reaches_it(start_worker) -> None:
    port = free_port()  # nothing listens there yet: the hive is "down"
    url = f"http://127.0.0.1:{port}/v1/workers/ready"
    w = start_worker(worker_id="w-early", callback_url=url, announce_interval=0.5)
    w.wait_idle()  # a failed callback does not hold the worker back
    _generate(w.url)
    time.sleep(1.5)  # several retries meanwhile
    assert w.proc.poll() is None, w.log()
    assert w.log().count("failed (") == 1, "one warning per outage, not one per retry:\n" + w.log()

    receiver = _late_receiver(port)
    try:
        assert receiver.arrived.wait(5), "the worker never reached the callback once it came up:\n" + w.log()
        ready = WorkerReady.model_validate(receiver.received[0]["body"])
        assert (ready.worker_id, ready.url, ready.managed_by) == ("w-early", w.url, "hive")
        _generate(w.url)
        assert "ready callback accepted" in w.log()
    finally:
        receiver.close()


def _late_receiver(port: int) -> CallbackReceiver:
    def bind() -> CallbackReceiver | None:
        try:
            return CallbackReceiver(port)
        except OSError:  # the port is briefly taken by someone else: retry
            return None

    return wait_until(bind, 5, f"port {port} to be free again", 0.1)


@pytest.mark.engine
def test_announce_interval_zero_calls_back_once(start_worker, callback_receiver: CallbackReceiver) -> None:
    w = start_worker(worker_id="w-once", callback_url=callback_receiver.url, announce_interval=0)
    w.wait_idle()
    time.sleep(1.0)
    assert len(callback_receiver.received) == 1, w.log()


@pytest.mark.engine
def test_draining_worker_stops_announcing(start_worker, callback_receiver: CallbackReceiver) -> None:
    w = start_worker(worker_id="w-drain", callback_url=callback_receiver.url, announce_interval=0.2, grace_period=30)
    w.wait_idle()
    body = openai_body(prompt="hi", max_tokens=1500)
    with httpx.stream("POST", f"{w.url}/v1/completions", json=body, headers=relay_headers("long"), timeout=30,
                      trust_env=False) as resp:  # fmt: skip
        assert resp.status_code == 200
        w.signal(signal.SIGTERM)
        w.wait_health(lambda h: h["state"] == "draining")
        count = len(callback_receiver.received)
        time.sleep(1.0)  # five intervals
        assert len(callback_receiver.received) <= count + 1, "a draining worker must not announce itself"
        assert httpx.delete(f"{w.url}/v1/requests/long", timeout=5).status_code == 204
        assert response_events(resp)[-1] == DONE
    assert w.wait_exit() == 0, w.log()
