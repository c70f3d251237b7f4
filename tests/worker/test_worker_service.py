"""The worker service end to end: a real process, real HTTP, real llama.cpp on the tiny model."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_runtime.common.contracts import WorkerHealth, WorkerReady
from rbee_runtime.common.relay import RelayEnd
from tests.support.processes import ProcessPool
from tests.support.services import WorkerProc, start_worker
from tests.support.sse import DONE, error_code, token_text
from tests.support.worker_api import is_end, open_generation, openai_body, post_generation

pytestmark = pytest.mark.engine

LONG = 1500  # tokens: several seconds of generation, so there is time to cancel mid-way


@pytest.fixture(scope="module")
def worker(tiny_model_path: Path, module_processes: ProcessPool) -> Iterator[WorkerProc]:
    """One shared worker with a single slot; each test leaves it idle."""
    w = start_worker(module_processes, "w-test", tiny_model_path, ctx_size=2048)
    w.wait_idle()
    yield w
    assert w.alive(), w.log()


def generate(url: str, request_id: str, **fields: Any,
             ) -> contextlib.AbstractContextManager[tuple[httpx.Response, Iterator[Any]]]:  # fmt: skip
    """A streamed OpenAI request relayed as the queen does: the response and an iterator of its events."""
    return open_generation(url, request_id, openai_body(**fields))


def post_whole(url: str, request_id: str = "x", **fields: Any) -> httpx.Response:
    """The same request, read whole (for answers that fail before the stream)."""
    return post_generation(url, request_id, openai_body(**fields))


def read_all(events: Iterator[Any]) -> tuple[list[str], dict[str, Any]]:
    """Consume a relayed stream: (token texts, the relay's end event); checks the framing."""
    tokens: list[str] = []
    end: dict[str, Any] | None = None
    done = False
    for event in events:
        assert not done, "nothing may follow [DONE]"
        if event == DONE:
            assert end is not None, "[DONE] before the end event"
            done = True
        elif is_end(event):
            assert end is None, "two end events"
            RelayEnd.model_validate(event)
            end = event
        elif (text := token_text(event)) is not None:
            assert end is None, "token after the end event"
            tokens.append(text)
        else:  # the opening, finish, usage or error chunk
            assert end is None, "a chunk after the end event"
    assert done and end is not None
    return tokens, end


def wait_generation_ended(worker: WorkerProc) -> dict[str, Any]:
    """The worker's health once no slot is busy: a generation counts its tokens before it frees its slot,
    so the counters are final then (no waiting for them to stand still)."""
    return worker.wait_idle(timeout=10)


def test_health_goes_loading_then_idle_and_ready_callback_arrives(start_worker, callback_receiver) -> None:
    callback_receiver.release.clear()  # hold the callback: the worker must stay `loading` meanwhile
    w = start_worker(worker_id="w-cb", slots=2, callback_url=callback_receiver.url)
    assert callback_receiver.arrived.wait(15), w.log()
    loading = WorkerHealth.model_validate(w.health())
    assert loading.state == "loading"
    refused = post_whole(w.url, "early", prompt="hi")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "WORKER_LOADING"
    callback_receiver.release.set()
    idle = WorkerHealth.model_validate(w.wait_idle())
    assert (idle.worker_id, idle.model_id, idle.slots_total, idle.slots_busy) == ("w-cb", "rbee-tiny", 2, 0)
    assert idle.tokens_generated_total == 0
    [post] = callback_receiver.received
    ready = WorkerReady.model_validate(post["body"])
    assert post["path"] == "/v1/workers/ready"
    assert ready.worker_id == "w-cb" and ready.url == w.url and ready.slots_total == 2
    assert ready.pid == w.proc.pid and ready.backend == "cpu" and ready.model_id == "rbee-tiny"


def test_tokens_stream_incrementally(worker: WorkerProc) -> None:
    """One chunk per token, in the generation's order, then the end event with the generation's own count.

    That they arrive while the generation runs (and not in one burst at its end) is shown by cause and
    effect, not by a clock: a client holding only the first events stops the generation early
    (``test_delete_cancels_mid_stream``, ``test_client_disconnect_stops_generation_and_frees_slot``).
    """
    before = worker.health()["tokens_generated_total"]
    with generate(worker.url, "inc", prompt="Once upon a time", max_tokens=400, seed=7) as (response, events):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "inc"
        tokens, end = read_all(events)
    assert len(tokens) == 400 and all(tokens)
    final = RelayEnd.model_validate(end)
    assert final.stop_reason == "length" and final.tokens_out == 400 and final.prompt_tokens > 1
    assert worker.wait_idle()["tokens_generated_total"] == before + 400


def test_chat_messages_generate(worker: WorkerProc) -> None:
    messages = [{"role": "system", "content": "You are a bee."}, {"role": "user", "content": "Buzz?"}]
    with generate(worker.url, "chat", messages=messages, max_tokens=12, temperature=0.0) as (response, events):
        assert response.status_code == 200
        tokens, end = read_all(events)
    assert len(tokens) == 12 and "".join(tokens).strip()
    assert end["stop_reason"] == "length" and end["tokens_out"] == 12 and end["prompt_tokens"] > 10


def test_all_slots_busy_is_503_with_retry_after(worker: WorkerProc) -> None:
    with generate(worker.url, "hog", prompt="hi", max_tokens=LONG) as (response, events):
        assert response.status_code == 200
        next(events)  # the slot is taken
        second = post_whole(worker.url, "late", prompt="hi")
        assert second.status_code == 503
        assert second.headers["retry-after"] == "1"
        error = second.json()["error"]
        assert error["code"] == "ALL_SLOTS_BUSY"
        assert error["details"] == {"slots_total": 1, "slots_busy": 1}
        assert worker.health()["state"] == "busy"
        assert httpx.delete(f"{worker.url}/v1/requests/hog").status_code == 204
        _, end = read_all(events)
        assert end["stop_reason"] == "cancelled"
    worker.wait_idle()


def test_delete_cancels_mid_stream(worker: WorkerProc) -> None:
    before = worker.health()
    with generate(worker.url, "c1", prompt="hi", max_tokens=LONG) as (_, events):
        for _ in range(5):
            assert token_text(next(events))
        assert httpx.delete(f"{worker.url}/v1/requests/c1").status_code == 204
        seen: list[Any] = []
        tokens, end = read_all(_recording(events, seen))
    assert end["stop_reason"] == "cancelled"
    assert [code for e in seen if (code := error_code(e))] == ["REQUEST_CANCELLED"]
    assert 5 <= end["tokens_out"] < LONG
    assert len(tokens) + 5 == end["tokens_out"]  # every generated token was streamed
    after = wait_generation_ended(worker)
    assert after["tokens_generated_total"] - before["tokens_generated_total"] == end["tokens_out"]
    assert after["requests_cancelled_total"] == before["requests_cancelled_total"] + 1
    assert httpx.delete(f"{worker.url}/v1/requests/c1").status_code == 204  # idempotent
    assert httpx.delete(f"{worker.url}/v1/requests/never-existed").status_code == 204


def test_cancel_that_arrives_before_the_request_still_cancels(worker: WorkerProc) -> None:
    assert httpx.delete(f"{worker.url}/v1/requests/early-bird").status_code == 204
    with generate(worker.url, "early-bird", prompt="hi", max_tokens=LONG) as (_, events):
        tokens, end = read_all(events)
    assert tokens == [] and end["stop_reason"] == "cancelled" and end["tokens_out"] == 0
    worker.wait_idle()


def test_client_disconnect_stops_generation_and_frees_slot(worker: WorkerProc) -> None:
    before = worker.health()
    with generate(worker.url, "gone", prompt="hi", max_tokens=LONG) as (_, events):
        for _ in range(3):
            assert token_text(next(events))
    # leaving the block closed the connection mid-stream
    after = wait_generation_ended(worker)
    generated = after["tokens_generated_total"] - before["tokens_generated_total"]
    assert 3 <= generated < LONG
    assert after["requests_cancelled_total"] == before["requests_cancelled_total"] + 1


def _recording(events: Iterator[Any], seen: list[Any]) -> Iterator[Any]:
    for event in events:
        seen.append(event)
        yield event


def test_prompt_longer_than_context_is_400(worker: WorkerProc) -> None:
    response = post_whole(worker.url, "big", prompt="word " * 2100)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "CONTEXT_LENGTH_EXCEEDED" and "context window" in error["message"]
    assert worker.wait_idle()["slots_busy"] == 0


def test_bad_model_path_exits_1_with_a_clear_message(start_worker, tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    w = start_worker(model_path=str(missing))
    assert w.wait_exit() == 1
    log = w.log()
    assert "failed to load model 'rbee-tiny'" in log and str(missing) in log


def test_sigterm_drains_running_request_then_exits_0(start_worker) -> None:
    w = start_worker(slots=2)
    w.wait_idle()
    result: dict[str, Any] = {}
    started = threading.Event()

    def consume() -> None:
        with generate(w.url, "drain", prompt="hi", max_tokens=600) as (_, events):
            assert token_text(next(events))
            started.set()
            result["tokens"], result["end"] = read_all(events)

    reader = threading.Thread(target=consume)
    reader.start()
    assert started.wait(15)
    w.signal(signal.SIGTERM)
    health = w.wait_health(lambda h: h["state"] == "draining")
    assert health["slots_busy"] == 1
    refused = post_whole(w.url, "new", prompt="hi")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "WORKER_DRAINING"
    reader.join(30)
    assert result["end"]["stop_reason"] == "length" and len(result["tokens"]) == 599  # all but the first
    assert w.wait_exit() == 0, w.log()


def test_shutdown_endpoint_drains_and_exits_0(start_worker) -> None:
    w = start_worker()
    w.wait_idle()
    response = httpx.post(f"{w.url}/v1/shutdown")
    assert response.status_code == 202 and response.json()["state"] == "draining"
    assert w.wait_exit() == 0, w.log()


def test_grace_period_over_cancels_running_work(start_worker) -> None:
    w = start_worker(grace_period=0.2)
    w.wait_idle()
    with generate(w.url, "slow", prompt="hi", max_tokens=LONG) as (_, events):
        assert token_text(next(events))
        assert httpx.post(f"{w.url}/v1/shutdown").status_code == 202
        _, end = read_all(events)
    assert end["stop_reason"] == "cancelled"
    assert w.wait_exit() == 0, w.log()
