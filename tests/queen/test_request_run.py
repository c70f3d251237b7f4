"""The request path in-process: one owner (RequestRun) counts and ends every request once; one failure decision."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from queen_helpers import heartbeat, worker_info
from recorded_worker import CHAT_STREAM, COMPLETION_STREAM, COMPLETION_WHOLE, canned, client_view, cut_after

from rbee_runtime.common.contracts import ErrorEvent
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.failures import Outcome, classify
from rbee_runtime.queen.generation import WorkerLostError, WorkerReplyError
from rbee_runtime.queen.worker_http import WorkerConnectError, WorkerSilentError
from tests.prometheus import sample_value
from tests.support.stubs import CannedWorker

BODY = {"model": "m", "prompt": "hi", "max_tokens": 2}


@contextlib.contextmanager
def queen(worker: CannedWorker, failovers: int = 0) -> Iterator[TestClient]:
    """A queen whose workers w1 and w2 (model ``m``) are ``worker`` (a canned worker, real HTTP)."""
    app = create_app(QueenConfig(max_failover_attempts=failovers))
    state = app.state.queen
    state.registry.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", url=worker.url),
                                                            worker_info("w2", url=worker.url)]))  # fmt: skip
    try:
        with TestClient(app) as client:
            yield client
    finally:
        worker.close()


def recorded() -> CannedWorker:
    return canned(COMPLETION_STREAM)


def counted(client: TestClient, status: str) -> float:
    return sample_value(client.get("/metrics").text, "rbee_queen_requests_total", model="m", status=status)


def test_each_request_is_counted_and_ended_once() -> None:
    with queen(recorded()) as client:
        plain = client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "r-1"})
        assert plain.status_code == 200 and plain.json()["choices"][0]["text"] == " all when"
        assert plain.content == COMPLETION_WHOLE.lstrip() and plain.headers["content-type"] == "application/json"
        assert plain.headers["x-request-id"] == "r-1"
        streamed = client.post("/v1/completions", json={**BODY, "stream": True}, headers={"X-Request-Id": "r-1"})
        assert streamed.headers["x-request-id"] == "r-1" and streamed.content == client_view(COMPLETION_STREAM)
        bad_id = client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "bad id"})
        assert bad_id.status_code == 422 and "x-request-id" not in bad_id.headers
        state = client.app.state.queen  # type: ignore[attr-defined]
        assert state.inference.jobs == {} and state.scheduler.inflight("w1") == state.scheduler.inflight("w2") == 0
        assert counted(client, "200") == 2 and counted(client, "422") == 1
        metrics = client.get("/metrics").text
        assert sample_value(metrics, "rbee_queen_tokens_generated_total", model="m") == 4
        assert sample_value(metrics, "rbee_queen_time_to_first_token_seconds_count", model="m") == 2


def test_a_refusing_worker_is_failed_over_then_given_up() -> None:
    busy = recorded()
    busy.fail_with = (503, {"error": {"code": "ALL_SLOTS_BUSY", "message": "busy"}})

    with queen(busy, failovers=1) as client:
        response = client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "r-2"})
        assert response.status_code == 503 and response.headers["x-request-id"] == "r-2"
        error = response.json()["error"]
        assert error["code"] == "NO_WORKER_AVAILABLE" and error["details"]["attempts"] == 2
        assert counted(client, "503") == 1
        metrics = client.get("/metrics").text
        assert sample_value(metrics, "rbee_queen_failovers_total", model="m") == 1
        assert client.app.state.queen.inference.jobs == {}  # type: ignore[attr-defined]


def test_a_worker_refusing_the_request_itself_is_answered_as_is() -> None:
    invalid = recorded()
    invalid.fail_with = (422, {"error": {"code": "INVALID_REQUEST", "message": "no"}})

    with queen(invalid, failovers=2) as client:
        response = client.post("/v1/completions", json={**BODY, "stream": True})
        assert response.status_code == 422 and response.json()["error"]["code"] == "INVALID_REQUEST"
        assert response.headers["x-request-id"].startswith("cmpl-")
        assert counted(client, "422") == 1
        assert sample_value(client.get("/metrics").text, "rbee_queen_failovers_total", model="m") == 0


def test_a_stream_whose_worker_dies_after_the_first_token_ends_with_worker_failed() -> None:
    dying = canned(cut_after(CHAT_STREAM, 1, chat=True))

    with queen(dying, failovers=2) as client:
        response = client.post("/v1/chat/completions", json={"model": "m", "stream": True,
                                                              "messages": [{"role": "user", "content": "hi"}]})
        chunks = [p.removeprefix("data: ") for p in response.text.split("\n\n") if p]
        assert chunks[-1] == "[DONE]"
        assert json.loads(chunks[-2])["error"]["code"] == "WORKER_FAILED"
        assert counted(client, "200") == 1
        assert client.app.state.queen.scheduler.inflight("w1") == 0  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the failure decision


def refusal(status: int, code: str) -> ApiError:
    return ApiError(status, code, "m")


@pytest.mark.parametrize(
    ("exc", "phase", "outcome", "quarantine"),
    [
        (refusal(503, ErrorCode.ALL_SLOTS_BUSY), "first_event", Outcome.RETRY, False),
        (refusal(503, ErrorCode.WORKER_LOADING), "first_event", Outcome.RETRY, False),
        (refusal(500, ErrorCode.GENERATION_FAILED), "first_event", Outcome.RETRY, True),
        (refusal(400, ErrorCode.CONTEXT_LENGTH_EXCEEDED), "first_event", Outcome.ANSWER, False),
        (httpx.ConnectError("refused"), "first_event", Outcome.RETRY, True),
        (WorkerConnectError("refused"), "first_event", Outcome.RETRY, True),
        (WorkerSilentError("silent", 2.0), "first_event", Outcome.RETRY, True),
        (WorkerLostError("w1", "cut"), "first_event", Outcome.RETRY, True),
        (WorkerLostError("w1", "cut"), "generating", Outcome.RETRY, True),
        (WorkerLostError("w1", "cut"), "streaming", Outcome.LOST, True),
        (WorkerReplyError("w1", ErrorEvent(code=ErrorCode.GENERATION_FAILED, message="x")), "streaming",
         Outcome.ANSWER, False),
    ],
)
def test_classify(exc: BaseException, phase: str, outcome: Outcome, quarantine: bool) -> None:
    failure = classify(exc, "w1", phase, tokens=3)  # type: ignore[arg-type]
    assert failure is not None
    assert (failure.outcome, failure.quarantine) == (outcome, quarantine)
    assert (failure.error is not None) == (outcome is not Outcome.RETRY)


def test_classify_leaves_other_exceptions_alone() -> None:
    assert classify(ValueError("bug"), "w1", "first_event") is None


def test_a_stream_lost_after_tokens_says_how_many() -> None:
    failure = classify(WorkerLostError("w1", "cut", timed_out=True, silent_s=0.5), "w1", "streaming", tokens=4)
    assert failure is not None and failure.error is not None
    assert (failure.error.status, failure.error.code) == (504, ErrorCode.WORKER_TIMEOUT)
    assert failure.error.details == {"worker_id": "w1", "tokens": 4, "request_timeout_s": 0.5}
