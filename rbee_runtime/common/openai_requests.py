"""The OpenAI request bodies rbee takes (``POST /v1/completions``, ``POST /v1/chat/completions``).

The queen validates a client's body with these models, then forwards it unchanged to a worker, which
validates it again with the same models (one set of bounds, :mod:`~rbee_runtime.common.limits`) and turns it
into its engine's :class:`~rbee_runtime.common.contracts.GenerateRequest`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from rbee_runtime.common.contracts import (
    MAX_SEED,
    ChatMessage,
    GenerateRequest,
    Wire,
    check_stops,
    check_total_chars,
)
from rbee_runtime.common.limits import MAX_ID_CHARS, MAX_MESSAGES, MAX_STOP, MAX_TEXT_CHARS, MAX_TOKENS

#: Tokens generated when a request gives no ``max_tokens`` (the queen's ``default_max_tokens`` overrides it).
DEFAULT_MAX_TOKENS = 256

#: The two OpenAI endpoints.
Kind = Literal["completion", "chat"]


def _stop_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


class StreamOptions(Wire):
    include_usage: bool = False


class _Common(Wire):
    """Fields shared by both OpenAI endpoints (unknown fields are ignored, as OpenAI clients send many).

    As every :class:`Wire` model: finite numbers and valid Unicode text only; sizes bounded (:mod:`~.limits`).
    """

    model: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    user: str | None = Field(default=None, max_length=MAX_ID_CHARS)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are supported")
        check_stops(_stop_list(value))
        return value

    @property
    def engine_seed(self) -> int | None:
        """The seed as the engine takes it (an unsigned 32-bit number; OpenAI clients send 64-bit ones)."""
        return None if self.seed is None else self.seed % (MAX_SEED + 1)

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """``POST /v1/completions`` (one prompt per request)."""

    kind: ClassVar[Kind] = "completion"

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported (a string)")
        text = value if isinstance(value, str) else value[0]
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"the prompt has {len(text)} characters; at most {MAX_TEXT_CHARS} are allowed")
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
            seed=self.engine_seed,
            stop=_stop_list(self.stop),
        )


class TextPart(Wire):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class OpenAIMessage(Wire):
    """A chat message; content as a string or as text parts (other parts are refused)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)]
        | None
    ) = None

    @property
    def text(self) -> str:
        """The content as one string."""
        content = self.content
        return "" if content is None else content if isinstance(content, str) else "".join(p.text for p in content)

    def to_chat_message(self) -> ChatMessage:
        """The worker's message model (``developer`` is a ``system`` message)."""
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=self.text)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    kind: ClassVar[Kind] = "chat"

    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _messages_fit(self) -> ChatCompletionRequest:
        check_total_chars([m.text for m in self.messages])
        return self

    def to_generate(self, request_id: str, default_max_tokens: int) -> GenerateRequest:
        """The worker request for this chat completion."""
        return GenerateRequest(
            request_id=request_id,
            messages=[m.to_chat_message() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.engine_seed,
            stop=_stop_list(self.stop),
        )


def new_request_id(kind: Kind) -> str:
    """``cmpl-…`` or ``chatcmpl-…``: the completion id, also the id sent to the worker."""
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


OpenAIRequest = CompletionRequest | ChatCompletionRequest
