"""The cost of one ASGI ``send`` through :class:`~rbee_runtime.common.limits.WriteTimeout` (µs per send).

An app sends ``--sends`` body chunks to a server ``send`` that never blocks (the per-token path of a
reader that keeps up), once bare and once through the middleware; the difference is the middleware's cost.
``python -m bench.proxy.send_cost [--sends N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbee_runtime.common.limits import WriteTimeout


def streaming_app(sends: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}
        for _ in range(sends):
            await send(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _run(app: ASGIApp) -> float:
    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/completions", "client": ("127.0.0.1", 1)}
    start = time.perf_counter()
    await app(scope, receive, send)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bare = streaming_app(args.sends)
    wrapped = WriteTimeout(bare, timeout_s=30.0)
    best: dict[str, float] = {"bare": float("inf"), "write_timeout": float("inf")}
    for _ in range(args.repeats):  # alternating, best of each
        best["bare"] = min(best["bare"], asyncio.run(_run(bare)))
        best["write_timeout"] = min(best["write_timeout"], asyncio.run(_run(wrapped)))
    per_send = {name: seconds / (args.sends + 2) * 1e6 for name, seconds in best.items()}
    added = per_send["write_timeout"] - per_send["bare"]
    print(f"bare {per_send['bare']:.3f} µs/send, through WriteTimeout {per_send['write_timeout']:.3f} µs/send: "
          f"+{added:.3f} µs per send ({args.sends} sends, best of {args.repeats})")  # fmt: skip


if __name__ == "__main__":
    main()
