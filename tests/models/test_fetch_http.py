"""http(s) and hf: sources against a real local server: progress, resume, retries, HTTP errors, checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from rbee.models import FetchProgress, ModelFetchError, cache_paths, fetch_model, resolve_source
from rbee.spec.models import ModelSpec
from tests.models.helpers import http_model
from tests.models.server import ModelServer, Served

PATH = "/models/m1.gguf"


def test_download_with_progress(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload, slow_s=0.6))
    events: list[FetchProgress] = []

    got = fetch_model(http_model(url, payload_sha), tmp_path, progress=events.append, http=client)

    assert got.fetched and got.path.read_bytes() == payload and got.sha256 == payload_sha
    assert got.size_bytes == len(payload)
    assert len(events) >= 3  # start, at least one on the way, end
    assert events[0].bytes_done == 0 and events[-1].bytes_done == len(payload)
    assert all(e.bytes_total == len(payload) and e.model_id == "m1" for e in events)
    assert [e.bytes_done for e in events] == sorted(e.bytes_done for e in events)
    assert events[-1].bytes_per_s > 0
    assert not cache_paths(tmp_path, "m1").part.exists()


def test_hf_source_goes_to_hf_endpoint(
    server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes, payload_sha: str
) -> None:
    server.serve("/owner/repo/resolve/main/sub/m-1.gguf", Served(payload))
    monkeypatch.setenv("HF_ENDPOINT", server.base + "/")
    model = ModelSpec(id="m1", source="hf:owner/repo/sub/m-1.gguf", sha256=payload_sha)

    got = fetch_model(model, tmp_path)  # the default client (no proxy is configured in tests)

    assert got.fetched and got.sha256 == payload_sha
    assert server.requests()[0].headers["user-agent"].startswith("rbee/")


def test_resume_within_one_run_after_a_dropped_connection(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str, waits: list[float]
) -> None:
    cut = 1024 * 1024 + 123
    url = server.serve(PATH, Served(payload, drop_after=cut))

    got = fetch_model(http_model(url, payload_sha), tmp_path, http=client, sleep=waits.append, backoff_s=0.01)

    first, second = server.requests(PATH)
    assert first.range is None and first.bytes_sent == cut
    assert second.range == f"bytes={cut}-" and second.status == 206
    assert second.bytes_sent == len(payload) - cut
    assert got.path.read_bytes() == payload and got.sha256 == payload_sha
    assert waits == [0.01]


def test_resume_across_runs_keeps_the_partial_file(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str, waits: list[float]
) -> None:
    cut = 2 * 1024 * 1024 + 7
    served = Served(payload, drop_after=cut, drop_times=100)
    url = server.serve(PATH, served)
    model = http_model(url, payload_sha)

    with pytest.raises(ModelFetchError) as caught:
        fetch_model(model, tmp_path, http=client, retries=0, sleep=waits.append)
    assert caught.value.code == "DOWNLOAD_FAILED" and url in caught.value.message
    part = cache_paths(tmp_path, "m1").part
    assert part.stat().st_size == cut and str(part) in caught.value.hint

    served.drop_after = None
    events: list[FetchProgress] = []
    got = fetch_model(model, tmp_path, http=client, progress=events.append)

    resumed = server.requests(PATH)[-1]
    assert resumed.range == f"bytes={cut}-" and resumed.bytes_sent == len(payload) - cut
    assert got.fetched and got.path.read_bytes() == payload and not part.exists()
    assert events[0].resumed_from == cut


def test_server_ignoring_range_restarts_cleanly(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload, ignore_range=True))
    cut = 1000
    cache_paths(tmp_path, "m1").part.write_bytes(payload[:cut])

    got = fetch_model(http_model(url, payload_sha), tmp_path, http=client)

    (only,) = server.requests(PATH)
    assert only.range == f"bytes={cut}-" and only.status == 200 and only.bytes_sent == len(payload)
    assert got.path.read_bytes() == payload


def test_stale_part_from_another_file_is_fetched_again_from_zero(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload))
    cache_paths(tmp_path, "m1").part.write_bytes(b"GGUF" + b"\0" * 5000)  # not the start of this payload

    got = fetch_model(http_model(url, payload_sha), tmp_path, http=client)

    assert [r.range for r in server.requests(PATH)] == ["bytes=5004-", None]
    assert got.path.read_bytes() == payload


def test_part_already_complete_gets_416_and_is_verified(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload))
    cache_paths(tmp_path, "m1").part.write_bytes(payload)

    got = fetch_model(http_model(url, payload_sha), tmp_path, http=client)

    assert [r.status for r in server.requests(PATH)] == [416]
    assert got.fetched and got.sha256 == payload_sha


def test_retries_after_500s_with_exponential_backoff(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str, waits: list[float]
) -> None:
    url = server.serve(PATH, Served(payload, fail_first=3))

    got = fetch_model(http_model(url, payload_sha), tmp_path, http=client, sleep=waits.append, backoff_s=0.5)

    assert [r.status for r in server.requests(PATH)] == [500, 500, 500, 200]
    assert waits == [0.5, 1.0, 2.0]
    assert got.path.read_bytes() == payload


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, waits: list[float], status: int
) -> None:
    url = server.serve(PATH, Served(payload, fail_first=1, fail_status=status, retry_after="7"))
    fetch_model(http_model(url), tmp_path, http=client, sleep=waits.append, backoff_s=0.01)
    assert waits == [7.0]


def test_all_retries_failing_is_download_failed(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, waits: list[float]
) -> None:
    url = server.serve(PATH, Served(payload, fail_first=100, fail_status=502))

    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url), tmp_path, http=client, retries=2, sleep=waits.append, backoff_s=0.01)

    assert caught.value.code == "DOWNLOAD_FAILED"
    assert url in caught.value.message and "3 attempts" in caught.value.message and "502" in caught.value.message
    assert len(server.requests(PATH)) == 3 and waits == [0.01, 0.02]
    assert not (tmp_path / "m1.gguf").exists()


def test_refused_connection_is_download_failed(tmp_path: Path, client: httpx.Client, waits: list[float]) -> None:
    from rbee_runtime.common.ports import free_port

    url = f"http://127.0.0.1:{free_port()}/m.gguf"
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url), tmp_path, http=client, retries=1, sleep=waits.append)
    assert caught.value.code == "DOWNLOAD_FAILED" and "ConnectError" in caught.value.message
    assert len(waits) == 1


def test_stalled_transfer_is_retried_from_where_it_stopped(
    server: ModelServer, tmp_path: Path, payload: bytes, payload_sha: str, waits: list[float]
) -> None:
    stall = 512 * 1024
    url = server.serve(PATH, Served(payload, stall_after=stall, stall_s=1.0))

    with httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=0.3)) as impatient:
        got = fetch_model(http_model(url, payload_sha), tmp_path, http=impatient, sleep=waits.append)

    second = server.requests(PATH)[1]
    assert second.range == f"bytes={stall}-"
    assert got.path.read_bytes() == payload


def test_checksum_mismatch_is_refused_and_nothing_is_cached(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload))
    wrong = hashlib.sha256(b"other").hexdigest()

    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url, wrong), tmp_path, http=client)

    error = caught.value
    assert error.code == "CHECKSUM_MISMATCH"
    assert wrong in error.message and payload_sha in error.message and url in error.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m1.gguf.lock"]


def test_404_is_model_not_found(server: ModelServer, client: httpx.Client, tmp_path: Path) -> None:
    url = server.base + "/nothing/here.gguf"
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url), tmp_path, http=client)
    assert caught.value.code == "MODEL_NOT_FOUND" and url in caught.value.message
    assert len(server.requests()) == 1  # not retried


def test_403_on_hf_source_is_access_denied_with_token_hint(
    server: ModelServer, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.serve("/gated/llm/resolve/main/m.gguf", Served(status=403))
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    model = ModelSpec(id="m1", source="hf:gated/llm/m.gguf")

    with pytest.raises(ModelFetchError) as caught:
        fetch_model(model, tmp_path, http=client)
    assert caught.value.code == "ACCESS_DENIED" and "set HF_TOKEN" in caught.value.hint
    assert "gated/llm" in caught.value.hint
    assert "authorization" not in server.requests()[0].headers

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(model, tmp_path, http=client)
    assert caught.value.code == "ACCESS_DENIED" and "HF_TOKEN" in caught.value.hint
    assert server.requests()[-1].headers["authorization"] == "Bearer hf_secret"
    assert "hf_secret" not in caught.value.message + caught.value.hint
    assert len(server.requests()) == 2  # not retried


def test_hf_token_is_not_sent_to_other_servers(
    server: ModelServer, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    url = server.serve(PATH, Served(status=401))
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url), tmp_path, http=client)
    assert caught.value.code == "ACCESS_DENIED"
    assert "authorization" not in server.requests(PATH)[0].headers


def test_not_gguf_is_refused(server: ModelServer, client: httpx.Client, tmp_path: Path) -> None:
    url = server.serve(PATH, Served(b"<!doctype html><title>Sign in</title>" + b" " * 200_000))
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url), tmp_path, http=client)
    assert caught.value.code == "NOT_GGUF" and "HTML" in caught.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m1.gguf.lock"]


def test_insufficient_disk_is_checked_before_downloading(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes
) -> None:
    url = server.serve(PATH, Served(payload))
    asked: list[Path] = []

    def tiny_disk(folder: Path) -> int:
        asked.append(folder)
        return 1024 * 1024

    with pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model(url), tmp_path, http=client, free_bytes=tiny_disk)

    assert caught.value.code == "INSUFFICIENT_DISK"
    assert "3.0 MiB" in caught.value.message and "1.0 MiB" in caught.value.message
    assert asked == [tmp_path]
    assert not cache_paths(tmp_path, "m1").part.exists()


def test_insufficient_disk_counts_only_the_rest_of_a_resumed_download(
    server: ModelServer, client: httpx.Client, tmp_path: Path, payload: bytes, payload_sha: str
) -> None:
    url = server.serve(PATH, Served(payload))
    cut = len(payload) - 1000
    cache_paths(tmp_path, "m1").part.write_bytes(payload[:cut])
    got = fetch_model(http_model(url, payload_sha), tmp_path, http=client, free_bytes=lambda _: 1000)
    assert got.sha256 == payload_sha


def test_plain_http_to_another_host_is_refused(tmp_path: Path) -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request to {request.url}")

    with httpx.Client(transport=httpx.MockTransport(no_network)) as offline, pytest.raises(ModelFetchError) as caught:
        fetch_model(http_model("http://example.com/m.gguf"), tmp_path, http=offline)
    assert caught.value.code == "UNSUPPORTED_SOURCE" and "https" in caught.value.hint


def test_resolve_source() -> None:
    env = {"HF_ENDPOINT": "https://mirror.example/"}
    assert resolve_source("hf:o/r/f.gguf", env={}).url == "https://huggingface.co/o/r/resolve/main/f.gguf"
    assert resolve_source("hf:o/r/d/f.gguf", env=env).url == "https://mirror.example/o/r/resolve/main/d/f.gguf"
    assert resolve_source("hf:o/r/f.gguf", env={}).hf_repo == "o/r"
    assert resolve_source("hf:o/r/a b.gguf", env={}).url.endswith("/resolve/main/a%20b.gguf")
    assert resolve_source("file:///a/b%20c.gguf").path == Path("/a/b c.gguf")
    assert resolve_source("https://h/x.gguf").hf_repo is None
    assert resolve_source("http://localhost:8/x.gguf").url == "http://localhost:8/x.gguf"
    with pytest.raises(ModelFetchError):
        resolve_source("hf:o/r/f.gguf", env={"HF_ENDPOINT": "http://mirror.example"})
