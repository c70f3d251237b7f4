"""End to end: one real worker with one slot, a queue of one, and what happens beyond it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool
from tests.support.services import QueenProc, register_workers, start_queen, start_worker
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def queen(procs: ProcessPool, tiny_model_path: Path) -> QueenProc:
    queen = start_queen(procs, "queen-queue", fast=False, queue_max=1, queue_timeout_s=30, stale_timeout_s=600)
    worker = start_worker(procs, "w-single", tiny_model_path, slots=1, ctx_size=4096)
    queen.wait_healthy()
    worker.wait_healthy(state="idle")
    register_workers(queen, [worker])
    return queen


def in_background(url: str, timeout: float) -> tuple[threading.Thread, dict[str, object]]:
    """POST a short completion from a thread; the outcome lands in the returned dict."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["response"] = httpx.post(
                url, json={"model": TINY_MODEL_ID, "prompt": "Short", "max_tokens": 3}, timeout=timeout,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_slots_exhausted_then_queue_full(queen: QueenProc) -> None:
    url = f"{queen.url}/v1/completions"
    depth: Callable[[], float] = lambda: queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID)  # noqa: E731
    long_body = {"model": TINY_MODEL_ID, "prompt": "Long", "max_tokens": 3000, "stream": True}
    with httpx.Client(timeout=30, trust_env=False) as http, http.stream("POST", url, json=long_body) as running:
        assert running.status_code == 200  # the only slot is now taken
        request_id = running.headers["x-request-id"]

        # A client that gives up while queued leaves the queue (the queen notices the disconnect).
        impatient, outcome = in_background(url, timeout=1.0)
        wait_until(lambda: depth() == 1, what="one request in the queue")
        over = http.post(url, json={"model": TINY_MODEL_ID, "prompt": "x", "max_tokens": 2})
        assert over.status_code == 503
        assert over.headers["retry-after"] == "1"
        error = over.json()["error"]
        assert error["code"] == "QUEUE_FULL"
        assert "queue_max=1" in error["message"]
        impatient.join(timeout=10)
        assert isinstance(outcome.get("error"), httpx.ReadTimeout)
        wait_until(lambda: depth() == 0, what="an empty queue")

        # A patient one gets the slot once the running request is cancelled.
        patient, outcome = in_background(url, timeout=60)
        wait_until(lambda: depth() == 1, what="one request in the queue")
        assert http.delete(f"{queen.url}/v1/requests/{request_id}").status_code == 204
        patient.join(timeout=30)
    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3
    assert queen.metric("rbee_queen_requests_total", model=TINY_MODEL_ID, status="503") == 1
    assert depth() == 0
