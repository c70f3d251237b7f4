"""Answers of a real worker to relayed requests (the tiny model, recorded), and a canned worker that replays them."""

from __future__ import annotations

from rbee_runtime.common.relay import END_MARK
from tests.support.stubs import CannedWorker

# Recorded from `POST /v1/completions` of a real worker (relay headers: id r-1, created 1700000000).
COMPLETION_STREAM = (
    b'data: {"id":"r-1","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,'
    b'"text":" all","logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"r-1","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,'
    b'"text":" when","logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"r-1","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,'
    b'"text":"","logprobs":null,"finish_reason":"length"}]}\n\n'
    b'event: rbee-end\ndata: {"tokens_out":2,"prompt_tokens":5,"stop_reason":"length"}\n\n'
    b"data: [DONE]\n\n"
)
COMPLETION_WHOLE = (
    b'  {"id":"r-1","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,'
    b'"text":" all when","logprobs":null,"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
)
# Recorded from `POST /v1/chat/completions` (id chatcmpl-9, stream_options.include_usage true).
CHAT_STREAM = (
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":" oil"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":" now"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":" from"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
    b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":28,"completion_tokens":3,"total_tokens":31}}\n\n'
    b'event: rbee-end\ndata: {"tokens_out":3,"prompt_tokens":28,"stop_reason":"length"}\n\n'
    b"data: [DONE]\n\n"
)


def client_view(stream: bytes) -> bytes:
    """What a client of the queen must receive for a worker's relayed ``stream``: it, less the end event."""
    return stream.split(END_MARK)[0] + b"data: [DONE]\n\n"


def cut_after(stream: bytes, tokens: int, chat: bool = False) -> bytes:
    """``stream`` broken after ``tokens`` token chunks (the worker process died there)."""
    return b"\n\n".join(stream.split(b"\n\n")[: tokens + chat]) + b"\n\n"


def canned(stream: bytes, whole: bytes = COMPLETION_WHOLE) -> CannedWorker:
    """A canned worker (real HTTP, see :class:`~tests.support.stubs.CannedWorker`) answering with these recordings."""
    return CannedWorker(stream, whole)
