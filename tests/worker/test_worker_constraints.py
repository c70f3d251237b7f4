"""Grammar-constrained answers on a real worker (llama.cpp on the tiny model): what a hostile schema or a cancel
in the middle of a JSON answer does. The worker must answer a clear 4xx, or stop cleanly, and stay up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ProcessPool
from tests.support.services import WorkerProc, start_worker
from tests.support.sse import DONE, error_code, open_sse

pytestmark = pytest.mark.engine

MESSAGES = [{"role": "user", "content": "hi"}]
#: A string the tiny model never closes: the answer runs to max_tokens inside it.
OPEN_STRING = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


@pytest.fixture(scope="module")
def worker(tiny_model_path: Path, module_processes: ProcessPool) -> Iterator[WorkerProc]:
    w = start_worker(module_processes, "w-constraints", tiny_model_path, ctx_size=4096)
    w.wait_idle()
    yield w
    assert w.alive(), w.log()


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 5000},  # llama.cpp's parser refuses the repetition (used: a crash)
        {"type": "string", "pattern": "no anchors"},  # llama-cpp-python's converter refuses it
        {"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}},
    ],
)
def test_a_schema_llama_cpp_cannot_take_is_400_and_the_worker_stays(worker: WorkerProc,
                                                                     schema: dict[str, Any]) -> None:  # fmt: skip
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 5, "response_format": schema_format(schema)}
    response = httpx.post(f"{worker.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("INPUT_REJECTED", "response_format")
    assert worker.alive() and worker.wait_idle()["slots_busy"] == 0


def test_a_tool_schema_llama_cpp_cannot_take_is_400_naming_tools(worker: WorkerProc) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "string", "maxLength": 9000}}}
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 5, "tools": [tool], "tool_choice": "required"}
    response = httpx.post(f"{worker.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "tools"


@pytest.mark.parametrize("kind", ["response_format", "tool"])
def test_cancel_inside_a_constrained_answer_stops_it_cleanly(worker: WorkerProc, kind: str) -> None:
    body: dict[str, Any] = {"model": "m", "messages": MESSAGES, "max_tokens": 1500, "stream": True}
    if kind == "tool":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": OPEN_STRING}}]
        body["tool_choice"] = "required"
    else:
        body["response_format"] = schema_format(OPEN_STRING)
    request_id = f"chatcmpl-cancel-{kind}"
    url = f"{worker.url}/v1/chat/completions"
    with open_sse(url, body, headers={"x-request-id": request_id}) as (response, events):
        assert response.status_code == 200
        for _ in range(12):  # well inside the string
            next(events)
        assert httpx.delete(f"{worker.url}/v1/requests/{request_id}").status_code == 204
        rest = list(events)
    assert rest[-1] == DONE and error_code(rest[-2]) == "REQUEST_CANCELLED"
    assert worker.alive() and worker.wait_idle()["slots_busy"] == 0
    after = httpx.post(url, json={"model": "m", "messages": MESSAGES, "max_tokens": 3}, timeout=30)
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 3


def test_logprobs_and_tool_calls_on_a_worker_without_the_queen(worker: WorkerProc) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}  # fmt: skip
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 40, "tools": [tool], "logprobs": True,
            "tool_choice": {"type": "function", "function": {"name": "f"}}}  # fmt: skip
    answer = httpx.post(f"{worker.url}/v1/chat/completions", json=body, timeout=30).json()
    choice = answer["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "f" and isinstance(json.loads(call["function"]["arguments"])["n"], int)
    assert "".join(t["token"] for t in choice["logprobs"]["content"]) == call["function"]["arguments"]


@pytest.mark.parametrize(("depth", "status"), [(400, 200), (50_000, 422)])
def test_a_deeply_nested_schema_is_answered_or_refused(worker: WorkerProc, depth: int, status: int) -> None:
    """A value nested deeper than Python's JSON reader goes is 422 (not a 500); a deep one it reads is served."""
    nested = "[" * depth + "]" * depth
    raw = ('{"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}], "response_format": '
           '{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "default": '
           + nested + "}}}}")  # fmt: skip
    response = httpx.post(f"{worker.url}/v1/chat/completions", content=raw.encode(), timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == status, response.text
    assert worker.alive() and worker.wait_idle()["slots_busy"] == 0
