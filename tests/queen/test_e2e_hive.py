"""End to end with a real hive: the queen starts a worker on demand, then forgets the hive once it stops."""

from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool, descendants
from tests.support.services import HiveProc, QueenProc, hive_config, start_hive, start_queen
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]

KEY = "hive-test-key"


@pytest.fixture(scope="module")
def cluster(procs: ProcessPool, tiny_model_path: Path) -> tuple[QueenProc, HiveProc]:
    queen = start_queen(procs, "queen-hive", fast=False, env={"RBEE_QUEEN_HIVE_KEYS": KEY},
                        api_keys_env="RBEE_QUEEN_HIVE_KEYS", heartbeat_interval_s=0.5, stale_timeout_s=1.5,
                        loading_timeout_s=60)  # fmt: skip
    queen.wait_healthy()
    config = hive_config(procs.workdir, "hive-1", model_path=tiny_model_path, queen_url=queen.url,
                         heartbeat_interval_s=0.5, ctx_size=1024)  # fmt: skip
    hive = start_hive(procs, config, wait=True)
    return queen, hive


def hive_ids(queen: QueenProc) -> list[tuple[str, str]]:
    hives = httpx.get(f"{queen.url}/v1/hives", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False)
    return [(h["hive_id"], h["status"]) for h in hives.json()["hives"]]


def test_worker_started_on_demand(cluster: tuple[QueenProc, HiveProc]) -> None:
    queen, hive = cluster
    wait_until(lambda: hive_ids(queen) == [("hive-1", "online")], 20, "the hive online at the queen")
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


def test_silent_hive_goes_stale_then_is_dropped(cluster: tuple[QueenProc, HiveProc]) -> None:
    queen, hive = cluster
    machine = [hive.proc.pid, *(p.pid for p in descendants(hive.proc.pid))]
    for pid in machine:  # the machine goes away: the hive and its workers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    hive.proc.wait(timeout=10)
    wait_until(lambda: hive_ids(queen) == [("hive-1", "stale")], 5, "the hive stale at the queen")
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=KEY, max_retries=0, timeout=30)
    assert client.models.list().data == []
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=TINY_MODEL_ID, prompt="x", max_tokens=2)
    assert (err.value.status_code, err.value.code) == (503, "NO_WORKER_AVAILABLE")
    wait_until(lambda: hive_ids(queen) == [], 5, "the queen to drop the hive")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=TINY_MODEL_ID, prompt="x", max_tokens=2)
