"""Many simultaneous streams through one mode: aggregate tokens/s, and the CPU time the proxy spent per token."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import httpx
import psutil

from bench.proxy.protocols import Sampling
from bench.proxy.sample import Endpoint, StreamError


@dataclass(frozen=True)
class LoadResult:
    """``streams`` clients each sending ``requests`` streams in a row; ``cpu_s``: the watched processes' CPU time;
    ``errors``: streams that failed (``first_error`` says how the first one did)."""

    streams: int
    requests: int
    tokens: int
    wall_s: float
    cpu_s: float | None
    errors: int = 0
    first_error: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_token(self) -> float | None:
        return None if self.cpu_s is None or not self.tokens else self.cpu_s * 1e6 / self.tokens

    def figures(self) -> dict[str, float | str | None]:
        return {
            "streams": self.streams, "requests": self.requests, "tokens": self.tokens, "wall_s": self.wall_s,
            "tokens_per_s": self.tokens_per_s, "cpu_s": self.cpu_s, "cpu_us_per_token": self.cpu_us_per_token,
            "errors": self.errors, "first_error": self.first_error,
        }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of its living descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def _one_stream(client: httpx.AsyncClient, endpoint: Endpoint, sampling: Sampling) -> int:
    url, body = endpoint.request(sampling)
    tokens = 0
    async with client.stream("POST", url, json=body, headers=endpoint.headers) as response:
        if response.status_code != 200:
            answer = await response.aread()
            raise StreamError(f"{endpoint.name}: POST {url} answered {response.status_code}: {answer[:300]!r}")
        async for line in response.aiter_lines():
            if line.startswith("data:") and endpoint.protocol.piece(line[5:].strip()) is not None:
                tokens += 1
    return tokens


def run_load(endpoint: Endpoint, sampling: Sampling, streams: int, requests: int, watch_pid: int | None) -> LoadResult:
    """Run ``streams`` concurrent clients, ``requests`` streams each (after one warm-up stream each); a failed
    stream is counted, not fatal: a proxy that fails under load is a finding of the run."""
    return asyncio.run(_measured(endpoint, sampling, streams, requests, watch_pid))


async def _measured(
    endpoint: Endpoint, sampling: Sampling, streams: int, requests: int, watch_pid: int | None
) -> LoadResult:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=120, trust_env=False, limits=limits) as client:

        async def client_loop(n: int) -> int:
            tokens = 0
            for _ in range(n):
                try:
                    tokens += await _one_stream(client, endpoint, sampling)
                except (StreamError, httpx.HTTPError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
            return tokens

        await asyncio.gather(*(client_loop(1) for _ in range(streams)))  # warm-up: every connection opened
        errors.clear()
        cpu_before = cpu_seconds(watch_pid) if watch_pid else None
        started = time.perf_counter()
        counts = await asyncio.gather(*(client_loop(requests) for _ in range(streams)))
        wall_s = time.perf_counter() - started
        cpu_s = cpu_seconds(watch_pid) - cpu_before if watch_pid and cpu_before is not None else None
    first = errors[0][:500] if errors else None
    return LoadResult(streams, streams * requests, sum(counts), wall_s, cpu_s, len(errors), first)
