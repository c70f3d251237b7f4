"""The queen ↔ worker contract of a relayed OpenAI request (docs/api.md, "Relay").

The queen validates a client's body, then ``POST``s it unchanged to the worker's ``/v1/completions`` or
``/v1/chat/completions`` with what only the queen knows in headers (:class:`RelayHeaders`): the request id
(the completion ``id`` and the cancel handle), ``created``, the default ``max_tokens``, and
``X-Rbee-Relay: 1``. The worker's chunk bytes are what the client receives; with ``X-Rbee-Relay`` the
worker also

- ends a stream with one internal event, ``event: rbee-end`` (:func:`end_event`: tokens, prompt tokens,
  how it stopped), before ``data: [DONE]``; the queen finds it with one ``bytes.find`` per read
  (:class:`EndScanner`), keeps it from the client, counts its tokens, and reads the stream to its end so
  the connection goes back to the pool;
- sends a ``stream=false`` answer's head at the first token, then one space per batch of tokens while it
  generates (the queen's read timeout is a bound on silence, not on the whole generation), then the JSON
  (the queen strips the leading spaces; leading whitespace is valid JSON anyway).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from rbee_runtime.common.contracts import Wire

#: A request id (chosen by a client with ``X-Request-Id``, or the queen's): safe in URLs and logs.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

#: Header names of the relay (the request id is the public ``X-Request-Id``).
REQUEST_ID_HEADER = "x-request-id"
RELAY_HEADER = "x-rbee-relay"
CREATED_HEADER = "x-rbee-created"
DEFAULT_MAX_TOKENS_HEADER = "x-rbee-default-max-tokens"

#: The first line of the worker's end event; a ``data:`` line never holds a raw newline, so this
#: sequence is found only where the event starts.
END_MARK = b"event: rbee-end\n"
#: The byte a relayed ``stream=false`` answer sends while it generates (stripped by the queen).
KEEPALIVE = b" "


@dataclass(frozen=True)
class RelayHeaders:
    """What the queen tells a worker about a request it relays."""

    request_id: str
    created: int
    default_max_tokens: int

    def as_headers(self) -> dict[str, str]:
        return {
            REQUEST_ID_HEADER: self.request_id,
            CREATED_HEADER: str(self.created),
            DEFAULT_MAX_TOKENS_HEADER: str(self.default_max_tokens),
            RELAY_HEADER: "1",
        }


class RelayEnd(Wire):
    """The worker's last word on a relayed stream: tokens generated and how the generation stopped."""

    tokens_out: int
    prompt_tokens: int
    stop_reason: Literal["length", "stop", "cancelled", "error"]


def end_event(end: RelayEnd) -> bytes:
    """The SSE event a worker ends a relayed stream with."""
    return END_MARK + b"data: " + end.model_dump_json().encode() + b"\n\n"


class MalformedEndError(ValueError):
    """The end event of a worker's stream cannot be read."""


def parse_end(block: bytes) -> RelayEnd:
    """The :class:`RelayEnd` of ``block`` (bytes starting with :data:`END_MARK`, the event complete)."""
    data = block[len(END_MARK) :].split(b"\n", 1)[0]
    if not data.startswith(b"data:"):
        raise MalformedEndError(f"no data line after {END_MARK!r}: {block[:200]!r}")
    try:
        return RelayEnd.model_validate_json(data[5:])
    except (ValidationError, json.JSONDecodeError) as exc:
        raise MalformedEndError(f"unreadable end event {data[:200]!r}") from exc


class EndScanner:
    """Cuts a worker's relayed stream into what goes to the client and its end event.

    :meth:`feed` takes the bytes as they arrive and returns the complete SSE events among them (a partial
    event waits for its end), up to the end event; ``end`` is set once that arrived. ``events`` counts the
    events given out.
    """

    def __init__(self) -> None:
        self._pending = b""
        self.end: RelayEnd | None = None
        self.events = 0

    def feed(self, data: bytes) -> bytes:
        """The complete events of what arrived so far (nothing once the end event was seen)."""
        if self.end is not None:
            return b""
        buf = self._pending + data if self._pending else data
        cut = buf.rfind(b"\n\n") + 2
        if cut < 2:
            self._pending = buf
            return b""
        complete, self._pending = buf[:cut], buf[cut:]
        at = complete.find(END_MARK)
        if at >= 0:
            self.end = parse_end(complete[at:])
            complete, self._pending = complete[:at], b""
        self.events += complete.count(b"\n\n")
        return complete
