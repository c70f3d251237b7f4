"""Generating on a worker as the queen does: its OpenAI routes with the relay headers (docs/api.md, "Relay").

A relayed stream ends with the internal ``rbee-end`` event, whose ``data:`` line :func:`~.sse.sse_events`
reads like any other: a dict with ``tokens_out``, ``prompt_tokens`` and ``stop_reason``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx

from rbee_runtime.common.relay import RelayHeaders
from tests.support.sse import open_sse


def route(body: dict[str, Any]) -> str:
    """The worker's route for an OpenAI ``body``: chat when it has ``messages``."""
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


def relay_headers(request_id: str, default_max_tokens: int = 64) -> dict[str, str]:
    """The queen's relay headers for ``request_id``."""
    return RelayHeaders(request_id, int(time.time()), default_max_tokens).as_headers()


def openai_body(**fields: Any) -> dict[str, Any]:
    """A streamed OpenAI body (``prompt`` or ``messages`` among ``fields``)."""
    return {"model": "rbee-tiny", "stream": True, **fields}


Events = contextlib.AbstractContextManager[tuple[httpx.Response, Iterator[Any]]]


def open_generation(url: str, request_id: str, body: dict[str, Any], timeout: float = 30.0) -> Events:
    """POST ``body`` streamed to the worker at ``url`` as the queen relays it; the response and its events."""
    return open_sse(url + route(body), body, relay_headers(request_id), timeout)


def post_generation(url: str, request_id: str, body: dict[str, Any], timeout: float = 30.0) -> httpx.Response:
    """POST ``body`` to the worker at ``url`` as the queen relays it, read whole."""
    return httpx.post(url + route(body), json=body, headers=relay_headers(request_id), timeout=timeout,
                      trust_env=False)  # fmt: skip


def is_end(event: Any) -> bool:
    """Whether ``event`` is the relay's ``rbee-end`` event."""
    return isinstance(event, dict) and "stop_reason" in event and "tokens_out" in event
