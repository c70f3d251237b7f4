"""End to end: a worker process dies while a request waits on it; the queen fails over to another."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import openai
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool
from tests.support.services import QueenProc, WorkerProc, register_workers, start_queen, start_worker
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(procs: ProcessPool, tiny_model_path: Path) -> tuple[QueenProc, WorkerProc, WorkerProc]:
    queen = start_queen(procs, "queen-failover", fast=False, stale_timeout_s=600, max_failover_attempts=2)
    first = start_worker(procs, "w-a", tiny_model_path, ctx_size=4096)  # chosen first: same load, smallest id
    second = start_worker(procs, "w-b", tiny_model_path, ctx_size=4096)
    queen.wait_healthy()
    first.wait_healthy(state="idle")
    second.wait_healthy(state="idle")
    register_workers(queen, [first, second])
    return queen, first, second


def test_worker_killed_before_first_token(cluster: tuple[QueenProc, WorkerProc, WorkerProc]) -> None:
    queen, doomed, survivor = cluster
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key="unused", max_retries=0, timeout=60)
    before = int(survivor.health()["tokens_generated_total"])
    os.kill(doomed.proc.pid, signal.SIGSTOP)  # the request reaches it and waits: no token comes
    result: dict[str, object] = {}

    def ask() -> None:
        try:
            stream = client.chat.completions.create(
                model=TINY_MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=12, stream=True
            )
            result["chunks"] = list(stream)
        except Exception as exc:
            result["error"] = exc

    asker = threading.Thread(target=ask)
    asker.start()
    # The queen sent the request to the frozen worker (in flight there), and no token can come back.
    wait_until(lambda: (queen.worker("w-a") or {}).get("in_flight") == 1, 10, "the request in flight on w-a")
    assert asker.is_alive()
    os.kill(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    asker.join(timeout=30)

    assert "error" not in result, result.get("error")
    chunks = result["chunks"]
    assert isinstance(chunks, list)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 12
    assert chunks[-1].choices[0].finish_reason == "length"
    assert int(survivor.health()["tokens_generated_total"]) == before + 12
    assert queen.metric("rbee_queen_failovers_total", model=TINY_MODEL_ID) == 1

    # The dead worker is no longer routed to: the next requests go straight to the survivor.
    for _ in range(2):
        done = client.completions.create(model=TINY_MODEL_ID, prompt="x", max_tokens=3)
        assert done.usage is not None and done.usage.completion_tokens == 3
    assert queen.metric("rbee_queen_failovers_total", model=TINY_MODEL_ID) == 1


def test_no_worker_left(cluster: tuple[QueenProc, WorkerProc, WorkerProc]) -> None:
    queen, _, survivor = cluster
    survivor.proc.kill()
    survivor.proc.wait(timeout=10)
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=TINY_MODEL_ID, prompt="x", max_tokens=3)
    assert err.value.status_code == 503
    assert err.value.code == "NO_WORKER_AVAILABLE"
