"""The OpenAI side of the queen: request models, and worker events translated to OpenAI payloads.

``POST /v1/completions`` and ``POST /v1/chat/completions`` become one worker
:class:`~rbee_runtime.common.contracts.GenerateRequest`; the worker's token/end events become an
aggregated completion (``stream=false``) or OpenAI SSE chunks (``stream=true``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rbee_runtime.common.contracts import ChatMessage, EndEvent, GenerateRequest

SSE_DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One ``data: {...}`` SSE event."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _stop_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Common(BaseModel):
    """Fields shared by both OpenAI endpoints (unknown fields are ignored, as OpenAI clients send many)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are supported")
        return value

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """``POST /v1/completions`` (one prompt per request)."""

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported (a string)")
        return value

    def to_generate(self, request_id: str, default_max_tokens: int) -> GenerateRequest:
        """The worker request for this completion."""
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return GenerateRequest(
            request_id=request_id,
            prompt=prompt,
            max_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=_stop_list(self.stop),
        )


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    """A chat message; content as a string or as text parts (other parts are refused)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def to_chat_message(self) -> ChatMessage:
        """The worker's message model (``developer`` is a ``system`` message)."""
        content = self.content
        text = "" if content is None else content if isinstance(content, str) else "".join(p.text for p in content)
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=text)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)

    def to_generate(self, request_id: str, default_max_tokens: int) -> GenerateRequest:
        """The worker request for this chat completion."""
        return GenerateRequest(
            request_id=request_id,
            messages=[m.to_chat_message() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=_stop_list(self.stop),
        )


def new_request_id(kind: Literal["completion", "chat"]) -> str:
    """``cmpl-…`` or ``chatcmpl-…``: the completion id, also the id sent to the worker."""
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def usage(end: EndEvent) -> dict[str, int]:
    """OpenAI usage block from the worker's end event."""
    return {
        "prompt_tokens": end.prompt_tokens,
        "completion_tokens": end.tokens_out,
        "total_tokens": end.prompt_tokens + end.tokens_out,
    }


def finish_reason(end: EndEvent) -> str:
    """OpenAI finish reason (``length`` or ``stop``)."""
    return "length" if end.stop_reason == "length" else "stop"


class Formatter:
    """Builds the OpenAI payloads of one request; subclasses fix the object kind."""

    def __init__(self, request_id: str, model: str, created: int | None = None) -> None:
        self.request_id = request_id
        self.model = model
        self.created = int(time.time()) if created is None else created

    def _envelope(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def opening_chunk(self) -> dict[str, Any] | None:
        """A chunk sent before the first token, if the format has one."""
        return None

    def token_chunk(self, text: str) -> dict[str, Any]:
        """One streamed piece of text."""
        raise NotImplementedError

    def final_chunk(self, end: EndEvent) -> dict[str, Any]:
        """The chunk carrying the finish reason."""
        raise NotImplementedError

    def usage_chunk(self, end: EndEvent) -> dict[str, Any]:
        """The ``stream_options.include_usage`` chunk (empty choices)."""
        raise NotImplementedError

    def response(self, text: str, end: EndEvent) -> dict[str, Any]:
        """The aggregated (``stream=false``) answer."""
        raise NotImplementedError


class CompletionFormatter(Formatter):
    """``text_completion`` objects."""

    def token_chunk(self, text: str) -> dict[str, Any]:
        return self._envelope(
            "text_completion", [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]
        )

    def final_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._envelope(
            "text_completion", [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason(end)}]
        )

    def usage_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._envelope("text_completion", [], usage=usage(end))

    def response(self, text: str, end: EndEvent) -> dict[str, Any]:
        return self._envelope(
            "text_completion",
            [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(end)}],
            usage=usage(end),
        )


class ChatFormatter(Formatter):
    """``chat.completion`` and ``chat.completion.chunk`` objects."""

    def _chunk(self, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return self._envelope(
            "chat.completion.chunk", [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]
        )

    def opening_chunk(self) -> dict[str, Any] | None:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def token_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text}, None)

    def final_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._chunk({}, finish_reason(end))

    def usage_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk", [], usage=usage(end))

    def response(self, text: str, end: EndEvent) -> dict[str, Any]:
        return self._envelope(
            "chat.completion",
            [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
              "finish_reason": finish_reason(end)}],
            usage=usage(end),
        )
