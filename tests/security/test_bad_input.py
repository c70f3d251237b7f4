"""Bad input is a 4xx and breaks nothing: a real queen, hive and worker on the tiny model.

Every refusal names the field, and afterwards the cluster is unharmed: the same worker, routable, never
quarantined or replaced, serves the next request (:func:`assert_unharmed`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee import tiny_model
from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.limits import MAX_BODY_BYTES, MAX_TEXT_CHARS, WRITE_TIMEOUT_ENV, MiB
from tests.support.processes import ProcessPool
from tests.support.services import (
    HEARTBEAT_S,
    RBEE,
    Cluster,
    hive_config,
    start_hive,
    start_queen,
    worker_health,
)
from tests.support.waiting import wait_until
from tests.support.wire import heartbeat, worker_info

pytestmark = pytest.mark.engine

#: A message the test model's chat template refuses (``raise_exception``), as real templates refuse e.g.
#: roles that do not alternate.
REFUSED = "the template refuses this"
REFUSING_TEMPLATE = (
    "{% for message in messages %}"
    f"{{% if message['content'] == '{REFUSED}' %}}{{{{ raise_exception('no, not this message') }}}}{{% endif %}}"
    "{% endfor %}" + tiny_model.CHAT_TEMPLATE
)
WRITE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def refusing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, with a chat template that refuses the message :data:`REFUSED`."""
    path = tmp_path_factory.mktemp("model") / "refusing.gguf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_model, "CHAT_TEMPLATE", REFUSING_TEMPLATE)
        return tiny_model.write_tiny_model(path)


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, refusing_model: Path) -> Cluster:
    """Queen (write timeout 2 s) + hive keeping one 1-slot worker (context 4096) of the refusing model."""
    queen = start_queen(module_processes, env={WRITE_TIMEOUT_ENV: str(WRITE_TIMEOUT_S)})
    placements = [{"model_id": TINY_MODEL_ID, "replicas": 1, "slots": 1}]
    config = hive_config(module_processes.workdir, "hive", model_path=refusing_model, queen_url=queen.url,
                         heartbeat_interval_s=HEARTBEAT_S, ctx_size=4096, placements=placements)  # fmt: skip
    hive = start_hive(module_processes, config)
    queen.wait_healthy()
    hive.wait_healthy()
    result = Cluster(module_processes, queen, hive, refusing_model)
    result.wait_serving(1)
    return result


@pytest.fixture
def before(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """The cluster as it serves before a test; afterwards it must be unharmed."""
    (worker,) = cluster.wait_serving(1)
    snapshot = {"worker": worker, "hive_workers": _hive_workers(cluster), "failovers": _failovers(cluster)}
    yield snapshot
    assert_unharmed(cluster, snapshot)


def _hive_workers(cluster: Cluster) -> list[tuple[str, int]]:
    return sorted((w["worker_id"], w["restarts"]) for w in cluster.hive.workers())


def _failovers(cluster: Cluster) -> float:
    return cluster.queen.metric("rbee_queen_failovers_total", model=TINY_MODEL_ID)


def complete(cluster: Cluster, **body: Any) -> httpx.Response:
    return cluster.queen.http.post("/v1/completions", json={"model": TINY_MODEL_ID, "prompt": "hello", "max_tokens": 3,
                                                            **body})  # fmt: skip


def assert_unharmed(cluster: Cluster, before: dict[str, Any]) -> None:
    """The worker of ``before`` still routable at the queen, not restarted or replaced, and serving."""
    worker = before["worker"]
    queen_view = cluster.queen.worker(worker["worker_id"])
    assert queen_view is not None and queen_view["routable"], queen_view
    assert [w["worker_id"] for w in cluster.serving()] == [worker["worker_id"]]
    assert _hive_workers(cluster) == before["hive_workers"], "a worker was restarted or replaced"
    assert _failovers(cluster) == before["failovers"]
    response = complete(cluster)
    assert response.status_code == 200, response.text
    assert worker_health(worker)["tokens_generated_total"] > 0


def post_raw(url: str, text: str | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST a JSON body exactly as written (``NaN`` literals, escaped lone surrogates)."""
    data = text.encode() if isinstance(text, str) else text
    return httpx.post(url, content=data, headers={"Content-Type": "application/json", **(headers or {})}, timeout=30)


def assert_refused(response: httpx.Response, status: int, code: str, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert field in error["message"], error
    return error


# --------------------------------------------------------------------------- invalid unicode


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/completions", '{"model": "rbee-tiny", "prompt": "hi \\ud800 there"}', "prompt"),
        ("/v1/chat/completions", '{"model": "rbee-tiny", "messages": [{"role": "user", "content": "x\\udfff"}]}',
         "messages.0.content"),
        ("/v1/chat/completions",
         '{"model": "rbee-tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}]}',
         "messages.0.content"),
        ("/v1/completions", '{"model": "rbee-tiny", "prompt": "hi", "stop": ["\\ud800"]}', "stop"),
        ("/v1/completions", '{"model": "rbee-\\ud800", "prompt": "hi"}', "model"),
    ],
)  # fmt: skip
def test_lone_surrogate_is_422_naming_the_field(cluster: Cluster, before: dict[str, Any], path: str, body: str,
                                                field: str) -> None:  # fmt: skip
    assert_refused(post_raw(cluster.queen.url + path, body), 422, "INVALID_REQUEST", field)


def test_lone_surrogate_sent_to_the_worker_itself_is_422(cluster: Cluster, before: dict[str, Any]) -> None:
    worker = before["worker"]["url"]
    body = '{"model": "m", "prompt": "a\\ud800"}'
    assert_refused(post_raw(worker + "/v1/completions", body), 422, "INVALID_REQUEST", "prompt")
    body = '{"model": "m", "messages": [{"role": "user", "content": "\\udc00"}]}'
    assert_refused(post_raw(worker + "/v1/chat/completions", body), 422, "INVALID_REQUEST", "messages.0.content")
    assert worker_health(before["worker"])["status"] == "ok"


# --------------------------------------------------------------------------- template errors


@pytest.mark.parametrize("stream", [False, True])
def test_chat_template_refusal_is_400_and_the_worker_stays_routable(cluster: Cluster, before: dict[str, Any],
                                                                   stream: bool) -> None:  # fmt: skip
    body = {"model": TINY_MODEL_ID, "stream": stream, "max_tokens": 3,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": REFUSED}]}  # fmt: skip
    response = cluster.queen.http.post("/v1/chat/completions", json=body)
    error = assert_refused(response, 400, "INPUT_REJECTED", "messages")
    assert "chat template" in error["message"] and "no, not this message" in error["message"], error
    assert error["details"]["fields"] == ["messages"]


def test_chat_template_refusal_on_the_worker_itself_is_400(cluster: Cluster, before: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": REFUSED}]}
    response = httpx.post(before["worker"]["url"] + "/v1/chat/completions", json=body, timeout=30)
    assert assert_refused(response, 400, "INPUT_REJECTED", "messages")["details"] == {"fields": ["messages"]}


# --------------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    ("literal", "field"), [("NaN", "temperature"), ("Infinity", "temperature"), ("-Infinity", "top_p")]
)
def test_non_finite_numbers_are_422(cluster: Cluster, before: dict[str, Any], literal: str, field: str) -> None:
    body = f'{{"model": "rbee-tiny", "prompt": "hi", "{field}": {literal}}}'
    error = assert_refused(post_raw(cluster.queen.url + "/v1/completions", body), 422, "INVALID_REQUEST", field)
    assert "finite" in error["message"]
    assert_refused(post_raw(before["worker"]["url"] + "/v1/completions", body), 422, "INVALID_REQUEST", field)


def post_heartbeat(queen_url: str, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """``POST /v1/hives/heartbeat`` with a body as written (``headers``: e.g. the hive's credential)."""
    return post_raw(f"{queen_url}/v1/hives/heartbeat", text, headers)


@pytest.mark.parametrize(("field", "literal"), [("last_activity", "NaN"), ("started_at", "Infinity")])
def test_heartbeat_with_a_non_finite_number_is_refused_and_workers_ls_works(
    cluster: Cluster, before: dict[str, Any], field: str, literal: str
) -> None:
    rogue = worker_info("nan-worker", TINY_MODEL_ID, hive_id="nan-hive", url="http://127.0.0.1:9/")
    beat = heartbeat("nan-hive", models=[TINY_MODEL_ID], workers=[rogue], url="http://127.0.0.1:9")
    data = beat.model_dump(mode="json")
    data["workers"][0][field] = "__NUMBER__"
    text = json.dumps(data).replace('"__NUMBER__"', literal)
    response = post_heartbeat(cluster.queen.url, text)
    error = assert_refused(response, 422, "INVALID_REQUEST", f"workers.0.{field}")
    assert "finite" in error["message"]
    assert "nan-hive" not in [h["hive_id"] for h in cluster.queen.hives()]
    env = {"PATH": "/usr/bin:/bin", "RBEE_QUEEN_URL": cluster.queen.url, "NO_COLOR": "1", "COLUMNS": "200"}
    listed = subprocess.run([RBEE, "workers", "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert before["worker"]["worker_id"] in listed.stdout and "nan-worker" not in listed.stdout


# --------------------------------------------------------------------------- sizes


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_is_413_on_queen_and_worker(cluster: Cluster, before: dict[str, Any], chunked: bool) -> None:
    size = MAX_BODY_BYTES + 1
    for url in (cluster.queen.url + "/v1/completions", before["worker"]["url"] + "/v1/completions"):
        content: Any = _chunks(size) if chunked else b" " * size
        response = httpx.post(url, content=content, headers={"Content-Type": "application/json"}, timeout=30)
        error = assert_refused(response, 413, "PAYLOAD_TOO_LARGE", "4 MiB")
        assert error["details"] == {"max_bytes": MAX_BODY_BYTES}
        if chunked:
            assert "content-length" not in response.request.headers


def test_hive_bounds_bodies_but_a_catalog_restore_may_be_larger(cluster: Cluster, before: dict[str, Any]) -> None:
    junk = b"x" * (2 * MiB)
    refused = cluster.hive.http.post("/v1/models", content=junk, headers={"Content-Type": "application/json"})
    assert assert_refused(refused, 413, "PAYLOAD_TOO_LARGE", "1 MiB")["details"] == {"max_bytes": MiB}
    restore = cluster.hive.http.post("/v1/catalog/restore", content=junk)
    assert restore.status_code == 400 and restore.json()["error"]["code"] == "CATALOG_BACKUP_INVALID", restore.text


LONG = "w" * (MAX_TEXT_CHARS + 1)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/completions", {"prompt": LONG}, "prompt"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, "messages.0.content"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "w" * (MAX_TEXT_CHARS // 2 + 1)}] * 2},
         "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}] * 2049}, "messages"),
        ("/v1/completions", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/v1/completions", {"prompt": "hi", "stop": "s" * 257}, "stop"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 8193}, "max_tokens"),
        ("/v1/completions", {"prompt": "hi", "model": "m" * 257}, "model"),
        ("/v1/completions", {"prompt": "hi", "user": "u" * 257}, "user"),
    ],
)  # fmt: skip
def test_oversized_fields_are_422_naming_the_field(cluster: Cluster, before: dict[str, Any], path: str,
                                                   body: dict[str, Any], field: str) -> None:  # fmt: skip
    response = cluster.queen.http.post(path, json={"model": TINY_MODEL_ID, **body})
    assert_refused(response, 422, "INVALID_REQUEST", field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": LONG}, "prompt"),
        ({"prompt": "hi", "stop": ["s" * 257]}, "stop"),
        ({"prompt": "hi", "max_tokens": 10**9}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}] * 2049}, "messages"),
    ],
)
def test_oversized_fields_sent_to_the_worker_are_422(cluster: Cluster, before: dict[str, Any], body: dict[str, Any],
                                                     field: str) -> None:  # fmt: skip
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    response = httpx.post(before["worker"]["url"] + path, json={"model": "m", **body}, timeout=30)
    assert_refused(response, 422, "INVALID_REQUEST", field)


def test_a_64_bit_seed_from_an_openai_client_is_taken(cluster: Cluster, before: dict[str, Any]) -> None:
    response = complete(cluster, seed=2**63 - 1)
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- metric labels


def test_unknown_models_never_become_metric_labels(cluster: Cluster, before: dict[str, Any]) -> None:
    names = [f"no-such-model-{i}" for i in range(12)]
    for name in names:
        assert complete(cluster, model=name).status_code == 404
    text = cluster.queen.http.get("/metrics").text
    assert not [name for name in names if name in text]
    assert cluster.queen.metric("rbee_queen_requests_total", model="unknown", status="404") >= len(names)


# --------------------------------------------------------------------------- slow readers


def _stalled_stream(url: str, body: dict[str, Any]) -> socket.socket:
    """A streaming request from a client that never reads: a tiny receive window and MSS, so the
    server's send buffer stays small and fills within a few hundred tokens."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))  # fmt: skip
    return sock


def test_a_client_that_stops_reading_frees_its_slot_within_the_write_timeout(
    cluster: Cluster, before: dict[str, Any]
) -> None:
    worker = before["worker"]
    start = worker_health(worker)
    max_tokens = 3800
    body = {"model": TINY_MODEL_ID, "prompt": "hi", "max_tokens": max_tokens, "stream": True}
    sock = _stalled_stream(cluster.queen.url, body)
    try:
        wait_until(lambda: worker_health(worker)["slots_busy"] == 1, 10, "the stalled stream to start")
        began = time.monotonic()
        freed = wait_until(lambda: (h := worker_health(worker))["slots_busy"] == 0 and h, 60,
                           "the worker slot to be freed")  # fmt: skip
        held_s = time.monotonic() - began
        assert freed["requests_cancelled_total"] == start["requests_cancelled_total"] + 1
        assert freed["tokens_generated_total"] - start["tokens_generated_total"] < max_tokens, "not cut short"
        assert "write timeout" in cluster.queen.log()
        print(f"slot held {held_s:.1f} s with a write timeout of {WRITE_TIMEOUT_S:g} s")
        response = complete(cluster)  # the slot serves the next request
        assert response.status_code == 200, response.text
    finally:
        sock.close()
