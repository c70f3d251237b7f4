"""OpenAI request models and the translation of recorded worker SSE streams into OpenAI payloads."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from queen_helpers import heartbeat, worker_info
from recorded_worker import CHAT_STREAM, COMPLETION_STREAM, canned, client_view, cut_after

from rbee_runtime.common.contracts import EndEvent
from rbee_runtime.common.openai_chunks import ChatFormatter, CompletionFormatter
from rbee_runtime.common.relay import RelayHeaders
from rbee_runtime.queen.clients import WorkerClient
from rbee_runtime.queen.generation import Relay
from rbee_runtime.queen.inference import InferenceService
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.openai_format import ChatCompletionRequest, CompletionRequest, new_request_id
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Scheduler
from tests.support.stubs import CannedWorker


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


def test_aggregated_payloads() -> None:  # written by the worker, forwarded by the queen
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


# --------------------------------------------------------------------------- relayed worker answers


@contextlib.contextmanager
def service_for(worker: CannedWorker) -> Iterator[InferenceService]:
    """An inference service whose only worker is ``worker`` (a canned worker, real HTTP; closed at the end)."""
    registry = Registry(stale_timeout_s=60)
    registry.apply_heartbeat(heartbeat("h1", models=[], workers=[worker_info("w1", url=worker.url)]))
    scheduler = Scheduler(registry, None, queue_max=1, queue_timeout_s=1, loading_timeout_s=1)  # type: ignore[arg-type]
    try:
        yield InferenceService(registry, scheduler, WorkerClient(httpx.AsyncClient(), 10), QueenMetrics(),
                               max_failover_attempts=0, quarantine_s=10)  # fmt: skip
    finally:
        worker.close()


def relay(request_id: str, stream: bool = True, chat: bool = False) -> Relay:
    body = {"model": "m", "stream": stream, **({"messages": []} if chat else {"prompt": "x"})}
    return Relay(path="/v1/chat/completions" if chat else "/v1/completions", body=json.dumps(body).encode(),
                 headers=RelayHeaders(request_id, 1700000000, 8), stream=stream, chat=chat)  # fmt: skip


async def run_stream(worker_stream: bytes, chat: bool = False) -> tuple[bytes, int]:
    """What the client receives for a worker's stream, and the tokens counted."""
    with service_for(canned(worker_stream)) as service, service.tracked("r-1", "m", relay("r-1", chat=chat)) as job:
        generation = await service.first_event(job)
        raw = b"".join([chunk async for chunk in service.stream(job, generation)])
        await service.close(job, generation)
        tokens = job.tokens_out
    assert service.jobs == {}
    assert service.scheduler.inflight("w1") == 0
    return raw, tokens


@pytest.mark.anyio
@pytest.mark.parametrize(("stream", "chat", "tokens"), [(COMPLETION_STREAM, False, 2), (CHAT_STREAM, True, 3)])
async def test_the_workers_chunks_reach_the_client_unchanged(stream: bytes, chat: bool, tokens: int) -> None:
    raw, counted = await run_stream(stream, chat)
    assert raw == client_view(stream)  # byte for byte, the end event kept back
    assert counted == tokens


@pytest.mark.anyio
async def test_worker_lost_after_first_token_ends_with_error_chunk() -> None:
    raw, counted = await run_stream(cut_after(CHAT_STREAM, 2, chat=True), chat=True)
    events = [part.removeprefix(b"data: ") for part in raw.split(b"\n\n") if part]
    assert events[-1] == b"[DONE]"
    assert raw.startswith(cut_after(CHAT_STREAM, 2, chat=True))
    error = json.loads(events[-2])["error"]
    assert error["code"] == "WORKER_FAILED" and "2 token" in error["message"] and counted == 2


@pytest.mark.anyio
async def test_a_whole_answer_is_forwarded_without_its_keepalive_spaces() -> None:
    whole = b"   " + json.dumps({"id": "r-1", "usage": {"completion_tokens": 7}}).encode()
    with (
        service_for(canned(COMPLETION_STREAM, whole)) as service,
        service.tracked("r-1", "m", relay("r-1", stream=False)) as job,
    ):
        answer = await service.complete(job)
        assert job.tokens_out == 7
    assert answer == whole.lstrip()
    assert service.scheduler.inflight("w1") == 0
