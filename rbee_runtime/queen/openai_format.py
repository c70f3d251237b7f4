"""The OpenAI side of the queen: the request models it validates a client's body with.

The models live in :mod:`rbee_runtime.common.openai_requests` (a worker validates the body it is relayed with
the same ones); the answers' bytes are written by the worker (:mod:`rbee_runtime.common.openai_chunks`) and
forwarded unchanged.
"""

from __future__ import annotations

from rbee_runtime.common.openai_chunks import SSE_DONE, sse
from rbee_runtime.common.openai_requests import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIMessage,
    OpenAIRequest,
    StreamOptions,
    TextPart,
    new_request_id,
)

__all__ = [
    "SSE_DONE",
    "ChatCompletionRequest",
    "CompletionRequest",
    "OpenAIMessage",
    "OpenAIRequest",
    "StreamOptions",
    "TextPart",
    "new_request_id",
    "sse",
]
