"""Cancels for ids that are not running: remembered when the request is still to come, not after its end."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.services import WorkerProc
from tests.support.sse import DONE, sse_events
from tests.support.worker_api import is_end, openai_body, post_generation

pytestmark = pytest.mark.engine


def end_event(worker: WorkerProc, request_id: str) -> dict[str, object]:
    """The relay's end event of a short generation with ``request_id``."""
    response = post_generation(worker.url, request_id, openai_body(prompt="Hello", max_tokens=4))
    assert response.status_code == 200, response.text
    events = list(sse_events(response.text.splitlines()))
    assert events[-1] == DONE and is_end(events[-2]), events[-3:]
    end: dict[str, object] = events[-2]
    return end


def test_cancel_before_the_request_arrives_is_remembered(start_worker: Callable[..., WorkerProc]) -> None:
    worker = start_worker()
    worker.wait_idle()
    assert httpx.delete(f"{worker.url}/v1/requests/early-1", timeout=5).status_code == 204
    end = end_event(worker, "early-1")
    assert (end["stop_reason"], end["tokens_out"]) == ("cancelled", 0)


def test_cancel_after_the_end_does_not_cancel_a_request_reusing_the_id(
    start_worker: Callable[..., WorkerProc],
) -> None:
    worker = start_worker()
    worker.wait_idle()
    assert end_event(worker, "reused-1")["stop_reason"] == "length"
    # e.g. the queen's cancel arriving after the client's disconnect already stopped the generation
    assert httpx.delete(f"{worker.url}/v1/requests/reused-1", timeout=5).status_code == 204
    end = end_event(worker, "reused-1")
    assert (end["stop_reason"], end["tokens_out"]) == ("length", 4)
    assert worker.health()["requests_cancelled_total"] == 0
