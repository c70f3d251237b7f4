"""The relay end to end: a real queen in front of a real worker on the tiny model (llama.cpp).

The usage chunk is there only when the client asked for it, the worker's end event never reaches the
client, the tokens are counted, and sequential requests ride one kept-alive connection to the worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.relay import END_MARK
from tests.support.processes import ProcessPool
from tests.support.services import QueenProc, WorkerProc, register_workers, start_queen, start_worker

pytestmark = [pytest.mark.engine]


@pytest.fixture(scope="module")
def stack(procs: ProcessPool, tiny_model_path: Path) -> tuple[QueenProc, WorkerProc]:
    queen = start_queen(procs, "queen-relay", stale_timeout_s=600, heartbeat_interval_s=5)
    worker = start_worker(procs, "w-relay", tiny_model_path, ctx_size=1024)
    queen.wait_healthy()
    worker.wait_idle()
    register_workers(queen, [worker], models=(TINY_MODEL_ID,))
    return queen, worker


def chunks(raw: bytes) -> list[dict[str, object]]:
    events = [part.removeprefix(b"data: ") for part in raw.split(b"\n\n") if part]
    assert events[-1] == b"[DONE]" and all(not e.startswith(b"event:") for e in events)
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_usage_chunk_only_when_asked_and_the_tokens_counted(stack: tuple[QueenProc, WorkerProc],
                                                              include_usage: bool) -> None:  # fmt: skip
    queen, _ = stack
    before = queen.metric("rbee_queen_tokens_generated_total", model=TINY_MODEL_ID)
    body = {"model": TINY_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,
            "stream": True, "stream_options": {"include_usage": include_usage}}  # fmt: skip
    response = queen.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and END_MARK not in response.content
    got = chunks(response.content)
    usages = [c["usage"] for c in got if "usage" in c]
    assert usages == ([{"prompt_tokens": usages[0]["prompt_tokens"], "completion_tokens": 7,  # type: ignore[index]
                        "total_tokens": usages[0]["total_tokens"]}] if include_usage else [])  # type: ignore[index]
    assert queen.metric("rbee_queen_tokens_generated_total", model=TINY_MODEL_ID) == before + 7


def test_sequential_requests_ride_one_connection_to_the_worker(stack: tuple[QueenProc, WorkerProc]) -> None:
    queen, worker = stack
    for i in range(5):
        body = {"model": TINY_MODEL_ID, "prompt": "Once", "max_tokens": 3, "stream": i % 2 == 0}
        assert queen.http.post("/v1/completions", json=body).status_code == 200
    to_worker = [c for c in psutil.net_connections(kind="tcp") if c.raddr and c.raddr.port == worker.port]
    assert len([c for c in to_worker if c.pid == queen.pid and c.status == psutil.CONN_ESTABLISHED]) == 1
    assert not [c for c in to_worker if c.status == psutil.CONN_TIME_WAIT]  # no connection was closed
