"""The write timeout on its own: a real uvicorn server in a thread, real sockets (no queen, no model).

A client that stops reading is dropped once one write has waited the timeout; a response whose
application is slow between writes (longer than the timeout), read by a client that keeps up, is not.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from rbee_runtime.common.limits import install_limits
from rbee_runtime.common.ports import free_port

TIMEOUT_S = 0.5
#: Pause between two chunks of the slow route: longer than the timeout, so only sends may be timed.
SLOW_PAUSE_S = 0.8


class Server:
    """A Starlette app behind uvicorn in a thread: ``/flood`` streams without end, ``/slow`` three chunks
    ``SLOW_PAUSE_S`` apart."""

    def __init__(self) -> None:
        self.port = free_port()
        app = Starlette(routes=[Route("/flood", self.flood), Route("/slow", self.slow)])
        install_limits(app, write_timeout=TIMEOUT_S)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def flood(self, _: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536

        return StreamingResponse(chunks())

    async def slow(self, _: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(SLOW_PAUSE_S)
                yield b"chunk %d\n" % i

        return StreamingResponse(chunks())

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


def test_a_client_that_stops_reading_is_dropped_after_the_timeout(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /flood HTTP/1.1\r\nHost: t\r\n\r\n")
        began = time.monotonic()
        while "write timeout" not in caplog.text:
            assert time.monotonic() - began < TIMEOUT_S + 10, "the stalled response was never abandoned"
            time.sleep(0.02)
        waited = time.monotonic() - began
        assert waited >= TIMEOUT_S, f"abandoned after {waited:.2f} s, before the timeout of {TIMEOUT_S} s"
        sock.settimeout(10)
        read = 0
        while chunk := sock.recv(1 << 20):  # what was buffered, then the end: the server closed the connection
            read += len(chunk)
            assert read < 64 << 20, "the server kept sending: the response was not abandoned"
    finally:
        sock.close()


def test_an_application_slower_than_the_timeout_between_writes_is_not_cut(server: Server) -> None:
    response = httpx.get(f"http://127.0.0.1:{server.port}/slow", timeout=10, trust_env=False)
    assert response.status_code == 200
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
