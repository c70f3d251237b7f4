"""One streamed generation timed from the client: time to first token, decode rate, token count."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.proxy.protocols import Sampling, StreamProtocol


class StreamError(Exception):
    """A stream that did not answer 200 or brought no text; the message quotes the answer."""


@dataclass(frozen=True)
class Sample:
    """``ttft_s``: request sent → first piece; ``decode_s``: first → last piece; ``tokens``: pieces."""

    ttft_s: float
    decode_s: float
    tokens: int

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one: ``(n - 1) / (t_last - t_first)`` (0 for fewer than 2)."""
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else 0.0


@dataclass(frozen=True)
class Endpoint:
    """Where a mode sends its requests: base URL, headers, and the protocol it speaks."""

    name: str
    url: str
    protocol: StreamProtocol
    headers: dict[str, str]

    def request(self, sampling: Sampling) -> tuple[str, dict[str, Any]]:
        return f"{self.url}{self.protocol.path}", self.protocol.body(sampling)


def measure(client: httpx.Client, endpoint: Endpoint, sampling: Sampling) -> Sample:
    """Stream one generation from ``endpoint`` and time it (the stream is read to its end)."""
    url, body = endpoint.request(sampling)
    first = last = 0.0
    tokens = 0
    start = time.perf_counter()
    with client.stream("POST", url, json=body, headers=endpoint.headers) as response:
        if response.status_code != 200:
            raise StreamError(f"{endpoint.name}: POST {url} answered {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            if endpoint.protocol.piece(line[5:].strip()) is None:
                continue
            last = time.perf_counter()
            if tokens == 0:
                first = last
            tokens += 1
    if tokens == 0:
        raise StreamError(f"{endpoint.name}: POST {url} streamed no text")
    return Sample(ttft_s=first - start, decode_s=last - first, tokens=tokens)
