"""The queen as a pass-through relay: a real queen process in front of canned workers (real HTTP, known bytes).

What a worker writes is what the client gets (its end event kept back); the client's body is what the worker
gets; connections to a worker are kept alive; failures before the first chunk fail over, after it they end
the stream with an error chunk; the worker's token counts reach the queen's metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from recorded_worker import CHAT_STREAM, COMPLETION_STREAM, COMPLETION_WHOLE, client_view, cut_after

from tests.support.processes import ProcessPool
from tests.support.services import QueenProc, start_queen
from tests.support.stubs import CannedWorker
from tests.support.wire import heartbeat, worker_info

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
COMPLETION = {"model": "m", "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def workers() -> Iterator[list[CannedWorker]]:
    made = [CannedWorker(COMPLETION_STREAM, COMPLETION_WHOLE), CannedWorker(COMPLETION_STREAM, COMPLETION_WHOLE)]
    yield made
    for worker in made:
        worker.close()


@pytest.fixture(scope="module")
def queen(procs: ProcessPool) -> QueenProc:
    q = start_queen(procs, "relay-queen", stale_timeout_s=60, max_failover_attempts=2)
    q.wait_healthy()
    return q


def worker_id(worker: CannedWorker) -> str:
    return f"canned-{worker.server.server_address[1]}"


def serve(queen: QueenProc, *workers: CannedWorker) -> None:
    """Tell the queen that ``workers`` serve model ``m`` (a hive's heartbeat; the last one replaces the others)."""
    infos = [worker_info(worker_id(w), "m", url=w.url, hive_id="canned") for w in workers]
    beat = heartbeat("canned", models=["m"], workers=infos, url="http://127.0.0.1:9")
    response = queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"))
    assert response.status_code == 200, response.text


def post(queen: QueenProc, path: str, body: dict[str, object], request_id: str | None = None) -> httpx.Response:
    headers = {"X-Request-Id": request_id} if request_id else {}
    return queen.http.post(path, content=json.dumps(body).encode(), headers=headers)


def test_the_client_gets_the_workers_bytes_and_the_worker_the_clients_body(
    queen: QueenProc, workers: list[CannedWorker]
) -> None:
    worker = workers[0]
    serve(queen, worker)
    body = {**COMPLETION, "stream": True, "user": "u-1", "logit_bias": {"7": 1.5}}
    streamed = post(queen, "/v1/completions", body, request_id="r-1")
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.content == client_view(COMPLETION_STREAM)
    sent = worker.received[-1]
    assert sent["path"] == "/v1/completions" and sent["body"] == json.dumps(body).encode()
    assert sent["headers"]["x-request-id"] == "r-1" and sent["headers"]["x-rbee-relay"] == "1"
    assert sent["headers"]["x-rbee-default-max-tokens"] == "256" and sent["headers"]["x-rbee-created"].isdigit()
    whole = post(queen, "/v1/completions", COMPLETION)
    assert whole.status_code == 200 and whole.content == COMPLETION_WHOLE.lstrip()
    assert whole.headers["x-request-id"] == worker.received[-1]["headers"]["x-request-id"]
    worker.stream = CHAT_STREAM
    chat = post(queen, "/v1/chat/completions", {**CHAT, "stream": True})
    assert chat.content == client_view(CHAT_STREAM) and worker.received[-1]["path"] == "/v1/chat/completions"


def test_sequential_requests_share_one_connection_to_the_worker(
    queen: QueenProc, workers: list[CannedWorker]
) -> None:
    worker = workers[0]
    serve(queen, worker)
    for i in range(6):
        response = post(queen, "/v1/completions", {**COMPLETION, "stream": i % 2 == 0})
        assert response.status_code == 200
    assert len(worker.received) == 6
    assert worker.connections == 1  # each stream read to its end: the connection went back to the pool


def test_usage_of_streamed_and_whole_answers_is_counted(queen: QueenProc, workers: list[CannedWorker]) -> None:
    serve(queen, workers[0])
    tokens = queen.metric("rbee_queen_tokens_generated_total", model="m")
    first = queen.metric("rbee_queen_time_to_first_token_seconds_count", model="m")
    assert post(queen, "/v1/completions", {**COMPLETION, "stream": True}).status_code == 200  # end event: 2
    assert post(queen, "/v1/completions", COMPLETION).status_code == 200  # usage.completion_tokens: 2
    assert queen.metric("rbee_queen_tokens_generated_total", model="m") == tokens + 4
    assert queen.metric("rbee_queen_time_to_first_token_seconds_count", model="m") == first + 2


@pytest.mark.parametrize("stream", [True, False])
def test_a_worker_that_dies_before_the_first_chunk_is_failed_over(
    queen: QueenProc, workers: list[CannedWorker], stream: bool
) -> None:
    dying, healthy = workers
    dying.cut_at = 0  # the head is sent, then the connection closes
    healthy.refuse = 1  # and the other refuses once (503 ALL_SLOTS_BUSY): retried after a pause
    serve(queen, dying, healthy)
    failovers = queen.metric("rbee_queen_failovers_total", model="m")
    response = post(queen, "/v1/completions", {**COMPLETION, "stream": stream})
    assert response.status_code == 200
    assert response.content == (client_view(COMPLETION_STREAM) if stream else COMPLETION_WHOLE.lstrip())
    assert len(dying.received) == 1 and len(healthy.received) >= 1
    assert queen.metric("rbee_queen_failovers_total", model="m") >= failovers + 1
    assert queen.worker(worker_id(dying))["routable"] is False  # type: ignore[index]  # quarantined


def test_a_worker_that_dies_after_the_first_chunk_ends_the_stream_with_worker_failed(
    queen: QueenProc, workers: list[CannedWorker]
) -> None:
    worker = workers[0]
    worker.stream = CHAT_STREAM
    worker.cut_at = len(cut_after(CHAT_STREAM, 2, chat=True)) + 10  # two tokens, then part of the third
    serve(queen, worker)
    response = post(queen, "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.content.startswith(cut_after(CHAT_STREAM, 2, chat=True))  # whole events only
    *_, error, done = [part for part in response.content.split(b"\n\n") if part]
    assert done == b"data: [DONE]"
    assert json.loads(error.removeprefix(b"data: "))["error"]["code"] == "WORKER_FAILED"
    assert "after 2 token(s)" in json.loads(error.removeprefix(b"data: "))["error"]["message"]
