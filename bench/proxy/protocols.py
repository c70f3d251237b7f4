"""The ways to ask for a streamed generation, each as request body + how to read a text piece.

- :class:`OpenAICompletions`: ``POST /v1/completions`` with ``stream: true`` (the queen, LiteLLM and a
  worker alike); a piece is ``choices[0].text`` of a chunk.
- :class:`OpenAIChat`: ``POST /v1/chat/completions`` (the prompt as one user message); a piece is
  ``choices[0].delta.content``.

All send the same sampling (:class:`Sampling`), so every mode asks for the very same generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    """What every request of a run asks for: greedy decoding, a fixed seed, a fixed length."""

    prompt: str = "The honey bee"
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42


class StreamProtocol(Protocol):
    """A request body for :class:`Sampling`, and the text piece of one SSE ``data:`` payload."""

    @property
    def path(self) -> str: ...

    def body(self, sampling: Sampling) -> dict[str, Any]: ...

    def piece(self, data: str) -> str | None: ...


@dataclass(frozen=True)
class OpenAICompletions:
    """OpenAI's streamed text completion for ``model``."""

    model: str
    path: str = "/v1/completions"

    def body(self, sampling: Sampling) -> dict[str, Any]:
        return {
            "model": self.model, "prompt": sampling.prompt, "max_tokens": sampling.max_tokens, "stream": True,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed,
        }  # fmt: skip

    def piece(self, data: str) -> str | None:
        if data == "[DONE]":
            return None
        choices = json.loads(data).get("choices") or [{}]
        text = choices[0].get("text")
        return text if isinstance(text, str) and text else None


@dataclass(frozen=True)
class OpenAIChat:
    """OpenAI's streamed chat completion for ``model``: the prompt is one user message."""

    model: str
    path: str = "/v1/chat/completions"

    def body(self, sampling: Sampling) -> dict[str, Any]:
        return {
            "model": self.model, "messages": [{"role": "user", "content": sampling.prompt}],
            "max_tokens": sampling.max_tokens, "stream": True,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed,
        }  # fmt: skip

    def piece(self, data: str) -> str | None:
        if data == "[DONE]":
            return None
        choices = json.loads(data).get("choices") or [{}]
        text = (choices[0].get("delta") or {}).get("content")
        return text if isinstance(text, str) and text else None


#: The OpenAI APIs a run can use (``--api``).
API = ("completions", "chat")


def openai_protocol(api: str, model: str) -> StreamProtocol:
    """The OpenAI protocol of ``api`` (``completions`` or ``chat``) for ``model``."""
    return OpenAIChat(model) if api == "chat" else OpenAICompletions(model)
