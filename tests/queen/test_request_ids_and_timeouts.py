"""Client-chosen request ids (``X-Request-Id``) and the request timeout of a silent worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.testclient import TestClient
from queen_helpers import heartbeat, worker_info
from starlette.types import Message

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.openai_chunks import CompletionFormatter
from rbee_runtime.common.relay import RelayHeaders
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.clients import WorkerClient
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.generation import Relay
from rbee_runtime.queen.inference import InferenceService
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Scheduler

BODY = {"model": "m", "prompt": "hi", "max_tokens": 3}


def relay(request_id: str) -> Relay:
    body = json.dumps({**BODY, "stream": True}).encode()
    return Relay("/v1/completions", body, RelayHeaders(request_id, 0, 8), stream=True, chat=False)


# --------------------------------------------------------------------------- X-Request-Id


@pytest.mark.parametrize("bad", ["has space", "-dash-first", "x" * 129, "slash/in/it", "semi;colon", ""])
def test_a_malformed_request_id_is_refused(bad: str) -> None:
    with TestClient(create_app(QueenConfig())) as client:
        response = client.post("/v1/completions", json=BODY, headers={"X-Request-Id": bad})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and error["details"] == {"fields": ["X-Request-Id"]}
    assert "X-Request-Id" in error["message"]


def test_a_chosen_request_id_is_used_and_echoed() -> None:
    with TestClient(create_app(QueenConfig())) as client:
        response = client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "my-id.1:a_b"})
    assert response.status_code == 404  # no model anywhere: the error still carries the chosen id
    assert response.headers["x-request-id"] == "my-id.1:a_b"


def test_a_request_id_in_use_is_refused() -> None:
    app = create_app(QueenConfig())
    with TestClient(app) as client:
        service = app.state.queen.inference
        with service.tracked("dup-1", "m", relay("dup-1")) as running:
            response = client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "dup-1"})
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "REQUEST_ID_IN_USE"
            assert response.headers["x-request-id"] == "dup-1"
            assert service.jobs["dup-1"] is running  # the running one is untouched
        assert client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "dup-1"}).status_code == 404


# --------------------------------------------------------------------------- request timeout


class NoHives:
    async def spawn_worker(self, hive_url: str, request: SpawnRequest) -> WorkerInfo:
        raise AssertionError("no spawn expected")

    async def list_workers(self, hive_url: str) -> list[WorkerInfo]:
        return []


@contextlib.asynccontextmanager
async def silent_worker(tokens_first: int) -> AsyncIterator[str]:
    """A worker that answers a relayed stream with ``tokens_first`` token chunks, then says nothing more."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if head.startswith(b"delete"):  # a cancel: taken, and still nothing more on the stream
            writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        await reader.readexactly(int(head.split(b"content-length:")[1].split(b"\r\n")[0]))
        if tokens_first:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            fmt = CompletionFormatter("r1", "m", 0)
            for i in range(tokens_first):
                writer.write(fmt.token_sse(f" t{i}"))
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the queen hangs up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


def service_for(url: str, http: httpx.AsyncClient, timeout_s: float, failovers: int) -> InferenceService:
    registry = Registry(stale_timeout_s=60)
    registry.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", "m", url=url)]))
    scheduler = Scheduler(registry, NoHives(), queue_max=4, queue_timeout_s=1, loading_timeout_s=1)
    return InferenceService(registry, scheduler, WorkerClient(http, read_timeout_s=timeout_s), QueenMetrics(),
                            max_failover_attempts=failovers, quarantine_s=60)  # fmt: skip


@pytest.mark.anyio
async def test_a_worker_silent_mid_stream_ends_it_with_worker_timeout() -> None:
    async with silent_worker(tokens_first=2) as url, httpx.AsyncClient() as http:
        service = service_for(url, http, timeout_s=0.3, failovers=2)
        with service.tracked("r1", "m", relay("r1")) as job:
            generation = await service.first_event(job)
            assert service.scheduler.inflight("w1") == 1
            chunks = [c async for c in service.stream(job, generation)]
            await service.close(job, generation)
    assert chunks[-1] == b"data: [DONE]\n\n"
    error = json.loads(chunks[-2].decode()[len("data: "):])["error"]
    assert error["code"] == "WORKER_TIMEOUT"
    assert error["details"] == {"worker_id": "w1", "tokens": 2, "request_timeout_s": 0.3}
    assert "sent nothing for 0.3 s (request_timeout_s)" in error["message"]
    assert service.scheduler.inflight("w1") == 0  # the slot is given back
    assert "r1" not in service.jobs


@pytest.mark.anyio
async def test_a_worker_silent_before_the_first_token_is_a_504() -> None:
    async with silent_worker(tokens_first=0) as url, httpx.AsyncClient() as http:
        service = service_for(url, http, timeout_s=0.3, failovers=0)
        with (
            service.tracked("r2", "m", relay("r2")) as job,
            pytest.raises(ApiError) as caught,
        ):
            await service.first_event(job)
    assert (caught.value.status, caught.value.code) == (504, "WORKER_TIMEOUT")
    assert caught.value.details["request_timeout_s"] == 0.3
    assert service.scheduler.inflight("w1") == 0


@pytest.mark.anyio
async def test_a_client_gone_mid_stream_frees_the_slot_at_once_even_from_a_silent_worker() -> None:
    async with silent_worker(tokens_first=1) as url:
        app = create_app(QueenConfig(request_timeout_s=300))
        state = app.state.queen
        state.registry.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", "m", url=url)]))
        body = json.dumps({**BODY, "stream": True}).encode()
        requests: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        gone = asyncio.Event()
        sent: list[Message] = []

        async def receive() -> Message:
            if requests:
                return requests.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if b" t0" in message.get("body", b""):
                gone.set()  # the client leaves after the first token; the worker says nothing more

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 7833),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        try:
            await asyncio.wait_for(app(scope, receive, send), timeout=10)
        finally:
            await state.http.aclose()
    assert sent[0]["status"] == 200 and sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert state.inference.jobs == {}
    assert state.scheduler.inflight("w1") == 0
