"""The OpenAI answers rbee sends, as bytes: SSE chunks of a stream, the aggregated completion, error chunks.

A worker writes them (its ``/v1/completions`` and ``/v1/chat/completions``), and the queen forwards them
to its client unchanged. A :class:`Formatter` builds the payloads of one request; the per-token chunk is
written from pre-encoded pieces (:meth:`Formatter.token_sse`), byte for byte what ``json.dumps`` of the
payload gives, without building a dict per token.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rbee_runtime.common.contracts import EndEvent
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_requests import Kind

SSE_DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One ``data: {...}`` SSE event."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def request_cancelled(request_id: str) -> ApiError:
    """The request was cancelled (``DELETE /v1/requests/{id}``, or its client went away)."""
    return ApiError(
        499,
        ErrorCode.REQUEST_CANCELLED,
        f"The request {request_id} was cancelled (DELETE /v1/requests/{request_id}).",
        details={"request_id": request_id},
    )


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

    #: ``object`` of a streamed chunk.
    chunk_object = ""

    def __init__(self, request_id: str, model: str, created: int | None = None) -> None:
        self.request_id = request_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self._token_head = (
            f'data: {{"id":{json.dumps(request_id)},"object":"{self.chunk_object}","created":{self.created},'
            f'"model":{json.dumps(model)},"choices":[{{"index":0,'
        ).encode()

    def _envelope(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}  # fmt: skip

    def opening_chunk(self) -> dict[str, Any] | None:
        """A chunk sent before the first token, if the format has one."""
        return None

    def token_chunk(self, text: str) -> dict[str, Any]:
        """One streamed piece of text."""
        raise NotImplementedError

    def token_sse(self, text: str) -> bytes:
        """``sse(self.token_chunk(text))``, written from pre-encoded pieces (the per-token path)."""
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

    chunk_object = "text_completion"

    def token_chunk(self, text: str) -> dict[str, Any]:
        return self._envelope(
            "text_completion", [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]
        )

    def token_sse(self, text: str) -> bytes:
        return b"".join((self._token_head, b'"text":', json.dumps(text).encode(),
                         b',"logprobs":null,"finish_reason":null}]}\n\n'))  # fmt: skip

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

    chunk_object = "chat.completion.chunk"

    def _chunk(self, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return self._envelope(
            "chat.completion.chunk", [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]
        )

    def opening_chunk(self) -> dict[str, Any] | None:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def token_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text}, None)

    def token_sse(self, text: str) -> bytes:
        return b"".join((self._token_head, b'"delta":{"content":', json.dumps(text).encode(),
                         b'},"logprobs":null,"finish_reason":null}]}\n\n'))  # fmt: skip

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
        )  # fmt: skip


def formatter(kind: Kind, request_id: str, model: str, created: int | None = None) -> Formatter:
    """The formatter of an endpoint's answers."""
    return (ChatFormatter if kind == "chat" else CompletionFormatter)(request_id, model, created)
