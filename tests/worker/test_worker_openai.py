"""The worker's OpenAI routes end to end: a real worker process, real HTTP, llama.cpp on the tiny model.

Without the relay headers the answers are plain OpenAI (any OpenAI client may call a worker); with them
(what the queen sends) the stream ends with the internal ``rbee-end`` event and a ``stream=false`` answer
starts with keep-alive spaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_runtime.common.relay import END_MARK, EndScanner, RelayHeaders
from tests.support.processes import ProcessPool
from tests.support.services import WorkerProc, start_worker
from tests.support.sse import DONE, error_code, open_sse, sse_events, token_text

pytestmark = pytest.mark.engine

CHAT = {"model": "public-name", "messages": [{"role": "user", "content": "Buzz?"}], "max_tokens": 5}
COMPLETION = {"model": "public-name", "prompt": "Once upon a time", "max_tokens": 5}
LONG = 1500


@pytest.fixture(scope="module")
def worker(tiny_model_path: Path, module_processes: ProcessPool) -> Iterator[WorkerProc]:
    w = start_worker(module_processes, "w-openai", tiny_model_path, ctx_size=2048)
    w.wait_idle()
    yield w
    assert w.alive(), w.log()


def relay(request_id: str, created: int = 1700000000, default_max_tokens: int = 256) -> dict[str, str]:
    return RelayHeaders(request_id, created, default_max_tokens).as_headers()


def raw_stream(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    response = httpx.post(url, json=body, headers=headers, timeout=30, trust_env=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return response.content


def test_chat_stream_is_plain_openai_without_relay_headers(worker: WorkerProc) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    raw = raw_stream(f"{worker.url}/v1/chat/completions", body)
    assert END_MARK not in raw
    events = list(sse_events(raw.decode().splitlines()))
    assert events[-1] == DONE
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "public-name" for c in chunks)
    assert len([t for c in chunks if (t := token_text(c))]) == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_relayed_stream_takes_the_queens_id_and_ends_with_the_end_event(worker: WorkerProc) -> None:
    raw = raw_stream(f"{worker.url}/v1/completions", {**COMPLETION, "stream": True}, relay("cmpl-r1", 42))
    before, _, after = raw.partition(END_MARK)
    assert after.endswith(b"\n\ndata: [DONE]\n\n")
    chunks = [json.loads(line[5:]) for line in before.decode().splitlines() if line.startswith("data:")]
    assert all((c["id"], c["created"], c["object"]) == ("cmpl-r1", 42, "text_completion") for c in chunks)
    assert "usage" not in chunks[-1]  # not asked for: not sent
    scanner = EndScanner()
    assert scanner.feed(raw) == before
    assert scanner.end is not None
    assert (scanner.end.tokens_out, scanner.end.stop_reason) == (5, "length") and scanner.end.prompt_tokens > 0


def test_default_max_tokens_comes_from_the_relay(worker: WorkerProc) -> None:
    body = {"model": "m", "prompt": "hi", "stream": True}
    raw = raw_stream(f"{worker.url}/v1/completions", body, relay("cmpl-r2", default_max_tokens=3))
    assert len([t for e in sse_events(raw.decode().splitlines()) if (t := token_text(e))]) == 3


def test_whole_answer_direct_and_relayed(worker: WorkerProc) -> None:
    direct = httpx.post(f"{worker.url}/v1/chat/completions", json={**CHAT, "temperature": 0.0, "seed": 1})
    assert direct.status_code == 200 and direct.headers["content-type"] == "application/json"
    answer = direct.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "public-name"
    assert answer["usage"]["completion_tokens"] == 5 and answer["choices"][0]["finish_reason"] == "length"
    relayed = httpx.post(f"{worker.url}/v1/chat/completions", json={**CHAT, "temperature": 0.0, "seed": 1},
                         headers=relay("chatcmpl-r3", answer["created"]))  # fmt: skip
    assert relayed.status_code == 200
    assert relayed.content.lstrip(b" ")[:1] == b"{"  # keep-alive spaces (one per batch) only before the JSON
    again = json.loads(relayed.content)
    assert again == {**answer, "id": "chatcmpl-r3"}  # same seed, same text


def test_delete_cancels_a_stream_with_the_cancelled_chunk(worker: WorkerProc) -> None:
    body = {**COMPLETION, "max_tokens": LONG, "stream": True}
    with open_sse(f"{worker.url}/v1/completions", body, headers={"x-request-id": "cmpl-c1"}) as (response, events):
        assert response.status_code == 200
        for _ in range(3):
            next(events)
        assert httpx.delete(f"{worker.url}/v1/requests/cmpl-c1").status_code == 204
        rest = list(events)
    assert rest[-1] == DONE and error_code(rest[-2]) == "REQUEST_CANCELLED"
    assert rest[-2]["error"]["message"] == "The request cmpl-c1 was cancelled (DELETE /v1/requests/cmpl-c1)."
    assert worker.wait_idle()["slots_busy"] == 0


@pytest.mark.parametrize(
    ("path", "body", "headers", "field"),
    [
        ("/v1/completions", {**COMPLETION, "temperature": 5}, {}, "temperature"),
        ("/v1/completions", {**COMPLETION, "temperature": "hot"}, {}, "temperature"),
        ("/v1/completions", {**COMPLETION, "max_tokens": 0}, {}, "max_tokens"),
        ("/v1/completions", {"model": "m"}, {}, "prompt"),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "alien", "content": "hi"}]}, {}, "messages.0.role"),
        ("/v1/completions", {**COMPLETION, "prompt": ["a", "b"]}, {}, "prompt"),
        ("/v1/chat/completions", {**CHAT, "messages": []}, {}, "messages"),
        ("/v1/completions", COMPLETION, {"x-request-id": "bad id"}, "X-Request-Id"),
        ("/v1/completions", COMPLETION, {"x-rbee-default-max-tokens": "0"}, "x-rbee-default-max-tokens"),
        ("/v1/completions", COMPLETION, {"x-rbee-created": "yesterday"}, "x-rbee-created"),
    ],
)
def test_invalid_input_is_422_naming_the_field(worker: WorkerProc, path: str, body: dict[str, Any],
                                               headers: dict[str, str], field: str) -> None:  # fmt: skip
    response = httpx.post(f"{worker.url}{path}", json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and field in error["details"]["fields"][0]


def test_prompt_longer_than_context_is_400_before_the_stream(worker: WorkerProc) -> None:
    body = {**COMPLETION, "prompt": "word " * 2100, "stream": True}
    response = httpx.post(f"{worker.url}/v1/completions", json=body, headers=relay("cmpl-big"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "CONTEXT_LENGTH_EXCEEDED"
    assert worker.wait_idle()["slots_busy"] == 0
