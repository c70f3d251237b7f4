"""End to end with a real hive: the queen starts a worker on demand, then forgets the hive once it stops."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from queen_processes import Processes, Service, descendants

from rbee.tiny_model import TINY_MODEL_ID

pytestmark = [pytest.mark.engine, pytest.mark.slow]

KEY = "hive-test-key"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(procs: Processes, tiny_model_path: Path) -> tuple[Service, Service]:
    queen = procs.queen("queen-hive", env={"RBEE_QUEEN_HIVE_KEYS": KEY}, api_keys_env="RBEE_QUEEN_HIVE_KEYS",
                        heartbeat_interval_s=0.5, stale_timeout_s=1.5, loading_timeout_s=60)
    procs.wait_healthy(queen)
    hive = procs.hive("hive-1", queen.url, tiny_model_path, queen_api_key=KEY, heartbeat_interval_s=0.5)
    procs.wait_healthy(hive)
    return queen, hive


def hive_ids(queen: Service) -> list[tuple[str, str]]:
    hives = httpx.get(f"{queen.url}/v1/hives", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False)
    return [(h["hive_id"], h["status"]) for h in hives.json()["hives"]]


def test_worker_started_on_demand(cluster: tuple[Service, Service]) -> None:
    queen, hive = cluster
    wait_for(lambda: hive_ids(queen) == [("hive-1", "online")])
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=KEY, max_retries=0, timeout=90)
    assert [m.id for m in client.models.list().data] == [TINY_MODEL_ID]
    assert httpx.get(f"{hive.url}/v1/workers", trust_env=False).json()["workers"] == []

    def ask(i: int) -> int:
        chat = client.chat.completions.create(
            model=TINY_MODEL_ID, messages=[{"role": "user", "content": f"Hi {i}"}], max_tokens=4
        )
        assert chat.usage is not None
        return chat.usage.completion_tokens

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(ask, range(3))) == [4, 4, 4]

    started = httpx.get(f"{hive.url}/v1/workers", trust_env=False).json()["workers"]
    assert len(started) == 1  # one start served all three requests
    assert started[0]["state"] in ("idle", "busy")
    seen = httpx.get(f"{queen.url}/v1/workers", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False)
    assert [w["worker_id"] for w in seen.json()["workers"]] == [started[0]["worker_id"]]


def test_silent_hive_goes_stale_then_is_dropped(cluster: tuple[Service, Service]) -> None:
    queen, hive = cluster
    machine = [hive.proc.pid, *(p.pid for p in descendants(hive.proc.pid))]
    for pid in machine:  # the machine goes away: the hive and its workers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    hive.proc.wait(timeout=10)
    wait_for(lambda: hive_ids(queen) == [("hive-1", "stale")], timeout=5)
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=KEY, max_retries=0, timeout=30)
    assert client.models.list().data == []
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=TINY_MODEL_ID, prompt="x", max_tokens=2)
    assert (err.value.status_code, err.value.code) == (503, "NO_WORKER_AVAILABLE")
    wait_for(lambda: hive_ids(queen) == [], timeout=5)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=TINY_MODEL_ID, prompt="x", max_tokens=2)
