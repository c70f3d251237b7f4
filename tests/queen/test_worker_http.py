"""The queen's relay client against real sockets: reuse, a connection the worker closed, silence, garbage."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from rbee_runtime.common.ports import free_port
from rbee_runtime.queen.worker_http import (
    Origin,
    WorkerConnectError,
    WorkerHttp,
    WorkerProtocolError,
    WorkerSilentError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" \
     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"  # fmt: skip


@contextlib.asynccontextmanager
async def server(handle: Handler) -> AsyncIterator[str]:
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


@pytest.mark.anyio
async def test_answers_are_read_and_the_connection_reused() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                seen.append(await read_request(reader))
                writer.write(OK)

    async with server(handle) as url:
        http = WorkerHttp()
        for _ in range(3):
            answer = await http.post(url, "/v1/completions", b"{}", {"x-request-id": "r1"}, 5)
            assert answer.status == 200 and answer.header(b"content-type") == "text/event-stream"
            assert await answer.read_all() == b"hello world"
            answer.close()
        http.close()
    assert http.connections_opened == 1
    assert seen[0].startswith(b"POST /v1/completions HTTP/1.1\r\n") and b"x-request-id: r1\r\n" in seen[0]
    assert seen[0].endswith(b"\r\n\r\n{}")


@pytest.mark.anyio
async def test_a_kept_connection_the_worker_closed_is_replaced_once() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")  # the next request arrives: closed unanswered, as a server
        writer.close()  # ending its keep-alive does

    async with server(handle) as url:
        http = WorkerHttp()
        for _ in range(2):
            answer = await http.post(url, "/x", b"{}", {}, 5)
            assert await answer.read_all() == b"hello world"
            answer.close()
        assert http.connections_opened == 2


@pytest.mark.anyio
async def test_silence_garbage_and_no_worker() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")

    http = WorkerHttp()
    async with server(silent) as url:
        with pytest.raises(WorkerSilentError) as caught:
            await http.post(url, "/x", b"{}", {}, 0.2)
        assert caught.value.silent_s == 0.2
    async with server(garbage) as url:
        with pytest.raises(WorkerProtocolError):
            await http.post(url, "/x", b"{}", {}, 5)
    with pytest.raises(WorkerConnectError):
        await http.post(f"http://127.0.0.1:{free_port()}", "/x", b"{}", {}, 5)
    with pytest.raises(WorkerConnectError, match="plain HTTP"):
        await WorkerHttp(ssl.create_default_context()).post("http://127.0.0.1:1", "/x", b"{}", {}, 5)


@pytest.mark.parametrize(
    ("url", "origin"),
    [("http://h:7840", Origin(False, "h", 7840)), ("https://h", Origin(True, "h", 443)),
     ("http://[::1]:9/", Origin(False, "::1", 9))],
)  # fmt: skip
def test_origins(url: str, origin: Origin) -> None:
    assert Origin.parse(url) == origin
    with pytest.raises(WorkerConnectError):
        Origin.parse("ftp://h:1")
