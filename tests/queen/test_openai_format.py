"""OpenAI request models and the translation of recorded worker SSE streams into OpenAI payloads."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from queen_helpers import heartbeat, worker_info

from rbee_runtime.common.contracts import EndEvent, TokenEvent
from rbee_runtime.queen.clients import DONE, WorkerClient, parse_worker_line
from rbee_runtime.queen.inference import InferenceService
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.openai_format import (
    ChatCompletionRequest,
    ChatFormatter,
    CompletionFormatter,
    CompletionRequest,
    Formatter,
    new_request_id,
)
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Scheduler

# Recorded from `POST /v1/generate` of a real worker on the tiny model.
RECORDED = (
    'data: {"type":"token","text":" all","index":0}\n\n'
    'data: {"type":"token","text":" when","index":1}\n\n'
    'data: {"type":"token","text":" worker","index":2}\n\n'
    'data: {"type":"end","tokens_out":3,"prompt_tokens":28,"stop_reason":"length","decode_ms":21.4}\n\n'
    "data: [DONE]\n\n"
)
# The same stream cut after the second token (the worker process died).
TRUNCATED = RECORDED.split('data: {"type":"token","text":" worker"')[0]


def test_parse_worker_lines() -> None:
    lines = RECORDED.splitlines()
    events = [parse_worker_line(line) for line in lines]
    assert isinstance(events[0], TokenEvent)
    assert events[0].text == " all"
    assert events[1] is None  # blank separator
    assert isinstance(events[6], EndEvent)
    assert events[6].stop_reason == "length"
    assert events[8] == DONE
    assert parse_worker_line(": keep-alive") is None
    assert parse_worker_line("data: {not json") is None


def test_completion_request_to_generate() -> None:
    req = CompletionRequest.model_validate(
        {"model": "m", "prompt": ["hello"], "max_tokens": 5, "stop": "\n", "seed": 3, "logprobs": None}
    )
    gen = req.to_generate("cmpl-1", default_max_tokens=99)
    assert (gen.prompt, gen.max_tokens, gen.stop, gen.seed, gen.request_id) == ("hello", 5, ["\n"], 3, "cmpl-1")
    assert CompletionRequest(model="m", prompt="x").to_generate("c", 99).max_tokens == 99


def test_chat_request_to_generate() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": None},
            ],
            "max_completion_tokens": 7,
            "max_tokens": 100,
        }
    )
    gen = req.to_generate("chatcmpl-1", default_max_tokens=99)
    assert gen.messages is not None
    assert [(m.role, m.content) for m in gen.messages] == [("system", "be brief"), ("user", "hi there"),
                                                           ("assistant", "")]
    assert gen.max_tokens == 7


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "m", "prompt": "x", "n": 2},
        {"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
        {"model": "m", "prompt": ["a", "b"]},
        {"model": "m", "prompt": "x", "temperature": 3},
        {"model": "", "prompt": "x"},
    ],
)
def test_invalid_requests(payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CompletionRequest.model_validate(payload)


def test_request_ids() -> None:
    assert new_request_id("completion").startswith("cmpl-")
    assert new_request_id("chat").startswith("chatcmpl-")


def test_aggregated_payloads() -> None:
    end = EndEvent(tokens_out=3, prompt_tokens=4, stop_reason="stop", decode_ms=1.0)
    body = CompletionFormatter("cmpl-1", "m", created=5).response("abc", end)
    assert body == {
        "id": "cmpl-1", "object": "text_completion", "created": 5, "model": "m",
        "choices": [{"index": 0, "text": "abc", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
    }
    chat = ChatFormatter("chatcmpl-1", "m", created=5).response("abc", end)
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "abc"}


# --------------------------------------------------------------------------- recorded streams


def service_for(body: str) -> InferenceService:
    """An inference service whose only worker answers with the recorded SSE ``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})

    registry = Registry(stale_timeout_s=60)
    registry.apply_heartbeat(heartbeat("h1", models=[], workers=[worker_info("w1", url="http://w1.invalid")]))
    scheduler = Scheduler(registry, None, queue_max=1, queue_timeout_s=1, loading_timeout_s=1)  # type: ignore[arg-type]
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return InferenceService(
        registry, scheduler, WorkerClient(http, 10), QueenMetrics(), max_failover_attempts=0, quarantine_s=10
    )


async def run_stream(body: str, fmt: Formatter, include_usage: bool = False) -> list[Any]:
    service = service_for(body)
    generate = CompletionRequest(model="m", prompt="x").to_generate(fmt.request_id, 8)
    with service.tracked(fmt.request_id, "m", generate) as job:
        generation = await service.first_event(job)
        raw = b"".join([chunk async for chunk in service.stream(job, generation, fmt, include_usage)])
        await service.close(job, generation)
    assert service.jobs == {}
    assert service.scheduler.inflight("w1") == 0
    events = [part.removeprefix("data: ") for part in raw.decode().split("\n\n") if part]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.anyio
async def test_completion_stream_from_recorded_worker() -> None:
    chunks = await run_stream(RECORDED, CompletionFormatter("cmpl-9", "m"), include_usage=True)
    assert [c["choices"][0]["text"] for c in chunks[:3]] == [" all", " when", " worker"]
    assert all(c["id"] == "cmpl-9" and c["object"] == "text_completion" for c in chunks)
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 28, "completion_tokens": 3, "total_tokens": 31}


@pytest.mark.anyio
async def test_chat_stream_from_recorded_worker() -> None:
    chunks = await run_stream(RECORDED, ChatFormatter("chatcmpl-9", "m"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == [" all", " when", " worker"]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


@pytest.mark.anyio
async def test_worker_lost_after_first_token_ends_with_error_chunk() -> None:
    chunks = await run_stream(TRUNCATED, ChatFormatter("chatcmpl-9", "m"))
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == [" all", " when"]
    assert chunks[-1]["error"]["code"] == "WORKER_FAILED"
    assert "2 token" in chunks[-1]["error"]["message"]


@pytest.mark.anyio
async def test_aggregate_recorded_stream() -> None:
    service = service_for(RECORDED)
    with service.tracked("cmpl-1", "m", CompletionRequest(model="m", prompt="x").to_generate("cmpl-1", 8)) as job:
        text, end = await service.complete(job)
    assert text == " all when worker"
    assert end.tokens_out == 3
    assert service.scheduler.inflight("w1") == 0
