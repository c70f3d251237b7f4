"""The OpenAI answers rbee sends, as bytes: SSE chunks of a stream, the aggregated completion, error chunks.

A worker writes them (its ``/v1/completions`` and ``/v1/chat/completions``), and the queen forwards them
to its client unchanged. A :class:`Formatter` builds the payloads of one request; the per-token chunk is
written from pre-encoded pieces (:meth:`Formatter.token_sse`), byte for byte what ``json.dumps`` of the
payload gives, without building a dict per token. Pieces with log probabilities or a tool call
(:class:`~rbee_runtime.common.pieces.Piece`) are written from their payload (:meth:`Formatter.piece_sse`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from rbee_runtime.common.contracts import EndEvent
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_requests import Kind
from rbee_runtime.common.pieces import Output, Piece, TokenLogprob

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


def finish_reason(end: EndEvent, tool_call: bool = False) -> str:
    """OpenAI finish reason (``length``, ``stop``, or ``tool_calls`` for a completed tool call)."""
    if end.stop_reason == "length":
        return "length"
    return "tool_calls" if tool_call else "stop"


def _text(pieces: list[Output]) -> str:
    return "".join(p if isinstance(p, str) else p.text or "" for p in pieces)


def _logprobs(pieces: list[Output]) -> list[TokenLogprob]:
    return [lp for p in pieces if isinstance(p, Piece) for lp in p.logprobs]


def _chat_logprob(lp: TokenLogprob) -> dict[str, Any]:
    top = [{"token": t, "logprob": v, "bytes": b} for t, v, b in lp.top]
    return {"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes, "top_logprobs": top}


class Formatter:
    """Builds the OpenAI payloads of one request; subclasses fix the object kind.

    ``tool_call``: the answer is a tool call (chat), ``logprobs``: it carries log probabilities.
    """

    #: ``object`` of a streamed chunk.
    chunk_object = ""

    def __init__(self, request_id: str, model: str, created: int | None = None, *, tool_call: bool = False,
                 logprobs: bool = False) -> None:  # fmt: skip
        self.request_id = request_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.tool_call = tool_call
        self.logprobs = logprobs
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

    def piece_sse(self, piece: Piece) -> bytes:
        """The chunk of a piece with log probabilities or of a tool call."""
        raise NotImplementedError

    def final_chunk(self, end: EndEvent) -> dict[str, Any]:
        """The chunk carrying the finish reason."""
        raise NotImplementedError

    def usage_chunk(self, end: EndEvent) -> dict[str, Any]:
        """The ``stream_options.include_usage`` chunk (empty choices)."""
        raise NotImplementedError

    def response(self, pieces: list[Output], end: EndEvent) -> dict[str, Any]:
        """The aggregated (``stream=false``) answer of the pieces generated."""
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

    def __init__(self, request_id: str, model: str, created: int | None = None, **flags: bool) -> None:
        super().__init__(request_id, model, created, **flags)
        self._offset = 0

    def _legacy_logprobs(self, logprobs: list[TokenLogprob]) -> dict[str, Any]:
        """The completions API's ``logprobs`` (``text_offset``: where each token starts in the answer)."""
        offsets = []
        for lp in logprobs:
            offsets.append(self._offset)
            self._offset += len(lp.token)
        return {
            "tokens": [lp.token for lp in logprobs],
            "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [{t: v for t, v, _ in lp.top} for lp in logprobs],
            "text_offset": offsets,
        }

    def piece_sse(self, piece: Piece) -> bytes:
        logprobs = self._legacy_logprobs(piece.logprobs) if self.logprobs else None
        return sse(self._envelope(
            "text_completion", [{"index": 0, "text": piece.text or "", "logprobs": logprobs, "finish_reason": None}]
        ))  # fmt: skip

    def final_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._envelope(
            "text_completion", [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason(end)}]
        )

    def usage_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._envelope("text_completion", [], usage=usage(end))

    def response(self, pieces: list[Output], end: EndEvent) -> dict[str, Any]:
        logprobs = self._legacy_logprobs(_logprobs(pieces)) if self.logprobs else None
        return self._envelope(
            "text_completion",
            [{"index": 0, "text": _text(pieces), "logprobs": logprobs, "finish_reason": finish_reason(end)}],
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
        return self._chunk({"role": "assistant", "content": None if self.tool_call else ""}, None)

    def token_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text}, None)

    def token_sse(self, text: str) -> bytes:
        return b"".join((self._token_head, b'"delta":{"content":', json.dumps(text).encode(),
                         b'},"logprobs":null,"finish_reason":null}]}\n\n'))  # fmt: skip

    def piece_sse(self, piece: Piece) -> bytes:
        delta: dict[str, Any] = {}
        if piece.text:
            delta["content"] = piece.text
        call = piece.tool_call
        if call is not None:
            function = {"name": call.name, "arguments": call.arguments} if call.name else {"arguments": call.arguments}
            head = {"id": call.id, "type": "function"} if call.id else {}
            delta["tool_calls"] = [{"index": 0, **head, "function": function}]
        logprobs = {"content": [_chat_logprob(lp) for lp in piece.logprobs]} if self.logprobs else None
        return sse(self._envelope(
            "chat.completion.chunk", [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}]
        ))  # fmt: skip

    def final_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._chunk({}, finish_reason(end, self.tool_call))

    def usage_chunk(self, end: EndEvent) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk", [], usage=usage(end))

    def response(self, pieces: list[Output], end: EndEvent) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": _text(pieces)}
        calls = [p.tool_call for p in pieces if isinstance(p, Piece) and p.tool_call is not None]
        if self.tool_call:
            first = calls[0] if calls else None
            message["content"] = None
            message["tool_calls"] = [{
                "id": first.id if first else "", "type": "function",
                "function": {"name": first.name if first else "", "arguments": "".join(c.arguments for c in calls)},
            }]  # fmt: skip
        logprobs = {"content": [_chat_logprob(lp) for lp in _logprobs(pieces)]} if self.logprobs else None
        reason = finish_reason(end, self.tool_call)
        return self._envelope(
            "chat.completion",
            [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}],
            usage=usage(end),
        )  # fmt: skip


def formatter(kind: Kind, request_id: str, model: str, created: int | None = None, *, tool_call: bool = False,
              logprobs: bool = False) -> Formatter:  # fmt: skip
    """The formatter of an endpoint's answers."""
    cls = ChatFormatter if kind == "chat" else CompletionFormatter
    return cls(request_id, model, created, tool_call=tool_call, logprobs=logprobs)
