"""The OpenAI request bodies the queen (and a worker) take: every refusal names its ``param``.

400 ``UNSUPPORTED_PARAMETER`` for what rbee does not know or cannot honour, 422 ``INVALID_REQUEST`` for a
malformed value (the bodies are parsed as the routes parse them, :func:`rbee_runtime.common.bodies.parse_json`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rbee_runtime.common.bodies import parse_json
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION: dict[str, Any] = {"model": "m", "prompt": "hi"}
EMBEDDING: dict[str, Any] = {"model": "m", "input": "hi"}
TOOL: dict[str, Any] = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
MODELS = {"chat": ChatCompletionRequest, "completion": CompletionRequest, "embedding": EmbeddingRequest}
BASES = {"chat": CHAT, "completion": COMPLETION, "embedding": EMBEDDING}


def refusal(kind: str, extra: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json(json.dumps({**BASES[kind], **extra}).encode(), MODELS[kind])
    return caught.value


@pytest.mark.parametrize(
    ("kind", "extra", "param"),
    [
        ("chat", {"logit_bias": {"the": 1}}, "logit_bias"),
        ("chat", {"logit_bias": {"5": 101}}, "logit_bias.5"),
        ("chat", {"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ("chat", {"frequency_penalty": 3}, "frequency_penalty"),
        ("chat", {"top_logprobs": 2}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("completion", {"logprobs": 6}, "logprobs"),
        ("chat", {"tools": [TOOL, TOOL], "tool_choice": "required"}, "tools"),
        ("chat", {"tool_choice": "required"}, "tool_choice"),
        ("chat", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
        ("chat", {"tools": [{"type": "function", "function": {"name": "bad name"}}], "tool_choice": "required"},
         "tools.0.function.name"),
        ("chat", {"response_format": {"type": "json_schema"}}, "response_format"),
        ("chat", {"response_format": {"type": "xml"}}, "response_format.type"),
        ("embedding", {"input": []}, "input"),
        ("embedding", {"input": ["x"] * 2049}, "input"),
        ("embedding", {"encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_a_malformed_value_is_422_naming_the_param(kind: str, extra: dict[str, Any], param: str) -> None:
    error = refusal(kind, extra)
    assert (error.status, error.code) == (422, "INVALID_REQUEST"), error.message
    assert error.param == param and error.body()["error"]["param"] == param


@pytest.mark.parametrize(
    ("kind", "extra", "param"),
    [
        ("chat", {"seed": 1, "top_k": 40}, "top_k"),
        ("chat", {"n": 3}, "n"),
        ("chat", {"tools": [TOOL]}, "tool_choice"),
        ("chat", {"tools": [TOOL], "tool_choice": "auto"}, "tool_choice"),
        ("completion", {"store": True}, "store"),
        ("completion", {"best_of": 3}, "best_of"),
        ("embedding", {"input": [1, 2, 3]}, "input"),
        ("embedding", {"dimensions": 32}, "dimensions"),
        ("embedding", {"stream": True}, "stream"),
    ],
)
def test_what_rbee_cannot_honour_is_400_naming_the_param(kind: str, extra: dict[str, Any], param: str) -> None:
    error = refusal(kind, extra)
    assert (error.status, error.code, error.param) == (400, "UNSUPPORTED_PARAMETER", param), error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_every_unknown_field_is_named_the_first_is_the_param() -> None:
    error = refusal("chat", {"functions": [], "audio": {}})
    assert error.param == "functions" and error.details["fields"] == ["functions", "audio"]
    assert "functions" in error.message and "audio" in error.message


def test_accepted_fields_become_the_engines_request() -> None:
    body = {**CHAT, "tools": [TOOL], "tool_choice": "required", "logprobs": True, "top_logprobs": 2, "seed": 2**63,
            "logit_bias": {"7": -3}, "frequency_penalty": 0.5, "stop": "x", "user": "u", "store": False, "n": 1,
            "parallel_tool_calls": False, "response_format": {"type": "json_object"}}  # fmt: skip
    request = parse_json(json.dumps(body).encode(), ChatCompletionRequest).to_generate("chatcmpl-1", 16)
    assert request.logprobs == 2 and request.logit_bias == {7: -3.0} and request.frequency_penalty == 0.5
    assert request.stop == ["x"] and request.json_object and request.seed == 2**63 % 2**32
    assert [t.name for t in request.call_tools] == ["f"] and request.tools == [TOOL]
    plain = parse_json(json.dumps({**CHAT, "tools": [TOOL], "tool_choice": "none"}).encode(), ChatCompletionRequest)
    assert plain.to_generate("chatcmpl-2", 16).tools is None  # tools not shown to the model with "none"
