"""The cache: hits without requests or re-hashing, stale entries, concurrent fetches of one model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

import rbee.models.cache as cache_module
from rbee.models import FetchedModel, cache_paths, cached_model, fetch_model
from tests.models.helpers import http_model
from tests.models.server import ModelServer, Served

PATH = "/models/m1.gguf"


def _offline() -> httpx.Client:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request to {request.url}")

    return httpx.Client(transport=httpx.MockTransport(no_network))


def _no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> object:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(cache_module, "hasher_of", refuse)


def test_second_fetch_is_a_cache_hit_without_request_or_rehash(
    server: ModelServer,
    client: httpx.Client,
    tmp_path: Path,
    payload: bytes,
    payload_sha: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = http_model(server.serve(PATH, Served(payload)), payload_sha)
    first = fetch_model(model, tmp_path, http=client)
    _no_hashing(monkeypatch)
    events: list[object] = []

    with _offline() as offline:
        second = fetch_model(model, tmp_path, http=offline, progress=events.append)

    assert first.fetched and not second.fetched
    assert (second.path, second.sha256, second.size_bytes) == (first.path, payload_sha, len(payload))
    assert len(server.requests(PATH)) == 1 and events == []
    assert cached_model(model, tmp_path) == second


def test_touched_file_is_rehashed_and_still_a_hit(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    model = http_model(server.serve(PATH, Served(payload)), payload_sha)
    got = fetch_model(model, tmp_path, http=client)
    os.utime(got.path, ns=(1_000_000_000, 1_000_000_000))

    with _offline() as offline:
        again = fetch_model(model, tmp_path, http=offline)

    assert not again.fetched and again.sha256 == payload_sha
    assert json.loads(cache_paths(tmp_path, "m1").sidecar.read_text())["mtime_ns"] == 1_000_000_000


def test_corrupted_cache_entry_is_fetched_again(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    model = http_model(server.serve(PATH, Served(payload)), payload_sha)
    got = fetch_model(model, tmp_path, http=client)
    got.path.write_bytes(payload[:-1] + b"!")  # same size, new mtime: re-hashed, mismatch

    assert cached_model(model, tmp_path) is None
    again = fetch_model(model, tmp_path, http=client)

    assert again.fetched and again.path.read_bytes() == payload
    assert len(server.requests(PATH)) == 2


def test_changed_source_without_sha_is_fetched_again(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes
) -> None:
    old = server.serve("/old.gguf", Served(b"GGUF old"))
    new = server.serve("/new.gguf", Served(payload))
    assert fetch_model(http_model(old), tmp_path, http=client).size_bytes == 8

    got = fetch_model(http_model(new), tmp_path, http=client)

    assert got.fetched and got.path.read_bytes() == payload


def test_file_placed_without_sidecar_is_adopted(tmp_path: Path, payload: bytes, payload_sha: str) -> None:
    (tmp_path / "m1.gguf").write_bytes(payload)
    with _offline() as offline:
        got = fetch_model(http_model("http://127.0.0.1:9/m.gguf"), tmp_path, http=offline)
    assert not got.fetched and got.sha256 == payload_sha
    assert json.loads(cache_paths(tmp_path, "m1").sidecar.read_text())["sha256"] == payload_sha


def test_two_threads_fetching_one_model_download_it_once(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    model = http_model(server.serve(PATH, Served(payload, slow_s=0.5)), payload_sha)
    start = threading.Barrier(2)
    results: list[FetchedModel] = []
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            with httpx.Client(trust_env=False) as own:
                results.append(fetch_model(model, tmp_path, http=own))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert sorted(r.fetched for r in results) == [False, True]
    assert {(r.path, r.sha256) for r in results} == {(tmp_path / "m1.gguf", payload_sha)}
    assert len(server.requests(PATH)) == 1
    assert (tmp_path / "m1.gguf").read_bytes() == payload


_CHILD = """
import json, sys
from pathlib import Path
from rbee.models import fetch_model
from tests.models.helpers import http_model
got = fetch_model(http_model(sys.argv[1], sys.argv[2]), Path(sys.argv[3]))
print(json.dumps({"fetched": got.fetched, "sha256": got.sha256}))
"""


def test_two_processes_fetching_one_model_download_it_once(
    server: ModelServer, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload, slow_s=1.0))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "NO_PROXY": "127.0.0.1,localhost"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, payload_sha, str(tmp_path)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [json.loads(child.communicate(timeout=30)[0]) for child in children]

    assert [child.returncode for child in children] == [0, 0]
    assert sorted(o["fetched"] for o in outputs) == [False, True]
    assert {o["sha256"] for o in outputs} == {payload_sha}
    assert len(server.requests(PATH)) == 1
