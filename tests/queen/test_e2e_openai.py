"""End to end: the openai client against a real queen in front of two real workers on the tiny model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool
from tests.support.services import QueenProc, WorkerProc, register_workers, start_queen, start_worker
from tests.support.sse import DONE, sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]

KEY = "test-key-123"


@dataclass
class Cluster:
    queen: QueenProc
    workers: list[WorkerProc]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}"}

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.queen.url}/v1", api_key=key, max_retries=0, timeout=30)

    def tokens_total(self) -> int:
        return sum(int(w.health()["tokens_generated_total"]) for w in self.workers)

    def slots_busy(self) -> int:
        return sum(int(w.health()["slots_busy"]) for w in self.workers)


@pytest.fixture(scope="module")
def cluster(procs: ProcessPool, tiny_model_path: Path) -> Cluster:
    queen = start_queen(procs, "queen-openai", fast=False, env={"RBEE_QUEEN_TEST_KEYS": KEY},
                        api_keys_env="RBEE_QUEEN_TEST_KEYS", stale_timeout_s=600, heartbeat_interval_s=5)
    workers = [start_worker(procs, f"w-{i}", tiny_model_path, slots=2, ctx_size=4096) for i in (1, 2)]
    queen.wait_healthy()
    for w in workers:
        w.wait_healthy(state="idle")
    register_workers(queen, workers, models=(TINY_MODEL_ID,))
    return Cluster(queen, workers)


def wait_until_still(cluster: Cluster, timeout: float = 10.0) -> int:
    """The workers' token total once no slot is busy: a generation counts its tokens before it frees its
    slot, so the total is final then (no waiting for it to stand still)."""
    wait_until(lambda: cluster.slots_busy() == 0, timeout, "every slot of the workers free")
    return cluster.tokens_total()


def test_models_list(cluster: Cluster) -> None:
    models = cluster.client().models.list()
    assert [m.id for m in models.data] == [TINY_MODEL_ID]
    assert models.data[0].owned_by == "rbee"


def test_completion(cluster: Cluster) -> None:
    raw = cluster.client().completions.with_raw_response.create(model=TINY_MODEL_ID, prompt="The bee", max_tokens=6)
    completion = raw.parse()
    assert raw.headers["x-request-id"] == completion.id
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].text.strip()
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6


def test_completion_stream(cluster: Cluster) -> None:
    stream = cluster.client().completions.create(model=TINY_MODEL_ID, prompt="The bee", max_tokens=5, stream=True)
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) == 5
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1


def test_chat(cluster: Cluster) -> None:
    chat = cluster.client().chat.completions.create(
        model=TINY_MODEL_ID, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=4, seed=1, temperature=0,
    )
    assert chat.id.startswith("chatcmpl-")
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 4


def test_chat_stream_is_incremental(cluster: Cluster) -> None:
    """One chunk per token, as many as the generation made.

    That they come while the worker generates, not in one burst at its end, is shown by cause and effect
    rather than by a clock: a client that leaves after 5 chunks stops the generation long before its
    max_tokens (``test_client_disconnect_stops_the_worker``, ``test_cancel_mid_stream``).
    """
    stream = cluster.client().chat.completions.create(
        model=TINY_MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=300, stream=True,
        stream_options={"include_usage": True},
    )
    contents: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            contents.append(chunk.choices[0].delta.content)
    assert len(contents) == 300
    assert usage is not None and usage.completion_tokens == 300


def test_unknown_model(cluster: Cluster) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        cluster.client().completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert "MODEL_NOT_FOUND" in str(err.value.body) or err.value.code == "MODEL_NOT_FOUND"
    assert TINY_MODEL_ID in err.value.message


def test_auth(cluster: Cluster) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        cluster.client(key="wrong-key").models.list()
    assert err.value.code == "INVALID_API_KEY"
    missing = httpx.get(f"{cluster.queen.url}/v1/models", timeout=5, trust_env=False)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "MISSING_API_KEY"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert httpx.get(f"{cluster.queen.url}/health", timeout=5, trust_env=False).status_code == 200


def test_malformed_requests(cluster: Cluster) -> None:
    url = f"{cluster.queen.url}/v1/chat/completions"
    bad_json = httpx.post(url, content=b'{"model": "x", ', headers={**cluster.auth, "Content-Type": "application/json"},
                          timeout=5, trust_env=False)
    assert bad_json.status_code == 422
    assert bad_json.json()["error"]["code"] == "INVALID_REQUEST"
    assert "not valid JSON" in bad_json.json()["error"]["message"]

    wrong_type = httpx.post(url, json={"model": TINY_MODEL_ID, "messages": "hi", "max_tokens": "many"},
                            headers=cluster.auth, timeout=5, trust_env=False)
    assert wrong_type.status_code == 422
    error = wrong_type.json()["error"]
    assert "messages" in error["message"] and "max_tokens" in error["message"]
    assert sorted(error["details"]["fields"]) == ["max_tokens", "messages"]


def test_cancel_mid_stream(cluster: Cluster) -> None:
    before = wait_until_still(cluster)
    url = f"{cluster.queen.url}/v1/completions"
    body = {"model": TINY_MODEL_ID, "prompt": "Long", "max_tokens": 3000, "stream": True}
    with httpx.Client(timeout=30, trust_env=False) as http, \
            http.stream("POST", url, json=body, headers=cluster.auth) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        events = sse_events(response.iter_lines())
        received = 0
        for event in events:
            if isinstance(event, dict) and event.get("choices") and event["choices"][0].get("text"):
                received += 1
                if received == 5:
                    break
        cancel = http.delete(f"{cluster.queen.url}/v1/requests/{request_id}", headers=cluster.auth)
        assert cancel.status_code == 204
        rest = list(events)
    assert rest[-1] == DONE
    assert rest[-2]["error"]["code"] == "REQUEST_CANCELLED"
    after = wait_until_still(cluster)
    assert after - before < 3000
    again = httpx.delete(f"{cluster.queen.url}/v1/requests/{request_id}", headers=cluster.auth, trust_env=False)
    assert again.status_code == 204
    unknown = httpx.delete(f"{cluster.queen.url}/v1/requests/nope", headers=cluster.auth, trust_env=False)
    assert unknown.status_code == 204


def test_client_disconnect_stops_the_worker(cluster: Cluster) -> None:
    before = wait_until_still(cluster)
    stream = cluster.client().chat.completions.create(
        model=TINY_MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=3000, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    after = wait_until_still(cluster)
    assert after - before < 3000


def test_cluster_views_and_metrics(cluster: Cluster) -> None:
    workers = httpx.get(f"{cluster.queen.url}/v1/workers", headers=cluster.auth, trust_env=False).json()["workers"]
    assert sorted(w["worker_id"] for w in workers) == ["w-1", "w-2"]
    assert all(w["status"] == "online" and w["routable"] and w["in_flight"] == 0 for w in workers)
    hives = httpx.get(f"{cluster.queen.url}/v1/hives", headers=cluster.auth, trust_env=False).json()["hives"]
    assert [(h["hive_id"], h["status"], h["workers"]) for h in hives] == [("test-hive", "online", 2)]

    queen = cluster.queen
    assert queen.metric("rbee_queen_requests_total", model=TINY_MODEL_ID, status="200") >= 6
    assert queen.metric("rbee_queen_requests_total", model="unknown", status="404") == 1
    assert queen.metric("rbee_queen_tokens_generated_total", model=TINY_MODEL_ID) >= 6 + 5 + 4 + 300
    assert queen.metric("rbee_queen_time_to_first_token_seconds_count", model=TINY_MODEL_ID) >= 6
    assert queen.metric("rbee_queen_workers", state="idle") == 2
    assert queen.metric("rbee_queen_hives_online") == 1
    assert queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID) == 0
