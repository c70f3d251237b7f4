"""A worker draining to stop refuses new requests (503 WORKER_DRAINING): the queen tries the others at once."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool
from tests.support.services import register_workers, start_queen, start_worker
from tests.support.waiting import wait_until
from tests.support.worker_api import openai_body, relay_headers

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_a_draining_worker_is_not_tried_again(procs: ProcessPool, tiny_model_path: Path) -> None:
    queen = start_queen(procs, "queen-drain", fast=False, stale_timeout_s=600, max_failover_attempts=2)
    draining = start_worker(procs, "w-a", tiny_model_path, ctx_size=4096, grace_period=60)  # first: smallest id
    other = start_worker(procs, "w-b", tiny_model_path, ctx_size=4096, slots=2)
    queen.wait_healthy()
    draining.wait_healthy(state="idle")
    other.wait_healthy(state="idle")
    register_workers(queen, [draining, other])  # both idle at the queen: it picks w-a first

    # a long generation on w-a, then its drain: it finishes that one and refuses anything new
    stop = threading.Event()

    def keep_busy() -> None:
        body = openai_body(prompt="x", max_tokens=3000)
        with httpx.stream("POST", f"{draining.url}/v1/completions", json=body, headers=relay_headers("long-1"),
                          timeout=120) as response:  # fmt: skip
            for _ in response.iter_lines():
                if stop.is_set():
                    break

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        wait_until(lambda: draining.health()["slots_busy"] == 1, 20, "the long generation running on w-a")
        assert draining.http.post("/v1/shutdown").status_code == 202
        assert draining.health()["state"] == "draining"
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key="unused", max_retries=0, timeout=60)
        # one stream through the queen holds a slot of w-b: w-a (draining, nothing in flight at the queen) now
        # looks the least busy to the queen every time
        streaming = client.completions.create(model=TINY_MODEL_ID, prompt="Hi", max_tokens=3000, stream=True)
        next(iter(streaming))
        wait_until(lambda: (queen.worker("w-b") or {}).get("in_flight") == 1, 10, "a stream in flight on w-b")
        reply = client.completions.create(model=TINY_MODEL_ID, prompt="Hi", max_tokens=4)
        assert reply.choices[0].finish_reason in ("length", "stop")  # served by w-b's free slot
        streaming.close()
    finally:
        stop.set()
        busy.join(timeout=60)
