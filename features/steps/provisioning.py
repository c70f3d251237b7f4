"""Steps of model provisioning: ``rbee.models.fetch_model`` against a real local HTTP server."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path
from typing import Any

import httpx
from pytest_bdd import given, parsers, then, when

from features.steps.data_fixtures import parse_size
from rbee.models import FetchedModel, FetchProgress, ModelFetchError, cache_paths, fetch_model
from tests.models.helpers import http_model
from tests.models.server import ModelServer, Served


def _client() -> httpx.Client:
    """A client that ignores proxy settings, with a short stall (read) timeout."""
    return httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=2.0))


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "model-cache"


def _provision(
    data_ctx: dict[str, Any], tmp_path: Path, model_id: str, url: str, sha256: str | None, **options: Any
) -> FetchedModel | ModelFetchError:
    """Fetch once; the result (or the error) and the progress reports land in ``data_ctx``."""
    events: list[FetchProgress] = []
    data_ctx["progress"] = events
    data_ctx["requests_before"] = len(data_ctx["server"].requests())
    with _client() as client:
        try:
            result: FetchedModel | ModelFetchError = fetch_model(
                http_model(url, sha256, model_id=model_id),
                _cache(tmp_path),
                progress=events.append,
                http=client,
                sleep=lambda _s: None,
                **options,
            )
        except ModelFetchError as error:
            result = error
    data_ctx["result"] = result
    return result


def _fetched(data_ctx: dict[str, Any]) -> FetchedModel:
    result = data_ctx["result"]
    assert isinstance(result, FetchedModel), f"provisioning failed: {result!r}"
    return result


# --------------------------------------------------------------------------- given


@given(parsers.parse('a model server on this machine serving "{name}" of {size}'))
def _server(data_ctx: dict[str, Any], model_http_server: ModelServer, clean_hf_env: None, name: str, size: str) -> None:
    payload = b"GGUF" + random.Random(name).randbytes(parse_size(size) - 4)
    served = Served(payload)
    data_ctx.update(
        server=model_http_server,
        served=served,
        path=f"/{name}",
        payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        url=model_http_server.serve(f"/{name}", served),
    )


@given(parsers.parse('the server drops the connection after {size} of "{name}"'))
def _drops(data_ctx: dict[str, Any], size: str, name: str) -> None:
    assert data_ctx["path"] == f"/{name}"
    data_ctx["served"].drop_after = parse_size(size)
    data_ctx["cut"] = parse_size(size)


@given(parsers.parse('the server sends "{name}" slowly, over about 1 second'))
def _slow(data_ctx: dict[str, Any], name: str) -> None:
    assert data_ctx["path"] == f"/{name}"
    data_ctx["served"].slow_s = 1.0


@given(parsers.parse('the model "{model_id}" was provisioned once'))
def _provisioned_once(data_ctx: dict[str, Any], tmp_path: Path, model_id: str) -> None:
    first = _provision(data_ctx, tmp_path, model_id, data_ctx["url"], data_ctx["sha256"])
    assert isinstance(first, FetchedModel) and first.fetched


# --------------------------------------------------------------------------- when


@when(parsers.parse('the model "{model_id}" is provisioned from the server with its sha256'))
def _provision_with_sha(data_ctx: dict[str, Any], tmp_path: Path, model_id: str) -> None:
    _provision(data_ctx, tmp_path, model_id, data_ctx["url"], data_ctx["sha256"])


@when(parsers.parse('the model "{model_id}" is provisioned from the server without retries'))
def _provision_no_retry(data_ctx: dict[str, Any], tmp_path: Path, model_id: str) -> None:
    _provision(data_ctx, tmp_path, model_id, data_ctx["url"], data_ctx["sha256"], retries=0)


@when(parsers.parse('the model "{model_id}" is provisioned from the server with a wrong sha256'))
def _provision_wrong_sha(data_ctx: dict[str, Any], tmp_path: Path, model_id: str) -> None:
    data_ctx["wrong_sha"] = hashlib.sha256(b"another file").hexdigest()
    _provision(data_ctx, tmp_path, model_id, data_ctx["url"], data_ctx["wrong_sha"])


@when(parsers.parse('the model "{model_id}" is provisioned from the server path "{path}"'))
def _provision_path(data_ctx: dict[str, Any], tmp_path: Path, model_id: str, path: str) -> None:
    data_ctx["missing_url"] = data_ctx["server"].base + path
    _provision(data_ctx, tmp_path, model_id, data_ctx["missing_url"], None)


@when(parsers.parse('two deploys provision the model "{model_id}" at the same time'))
def _provision_twice(data_ctx: dict[str, Any], tmp_path: Path, model_id: str) -> None:
    results: list[FetchedModel | BaseException] = []
    start = threading.Barrier(2)

    model = http_model(data_ctx["url"], data_ctx["sha256"], model_id)

    def deploy() -> None:
        start.wait()
        with _client() as client:
            try:
                results.append(fetch_model(model, _cache(tmp_path), http=client))
            except BaseException as exc:  # reported by the Then steps
                results.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a provisioner hangs"
    data_ctx["results"] = results


# --------------------------------------------------------------------------- then


@then(parsers.parse('the model cache holds "{name}" with the expected sha256'))
def _cache_holds(data_ctx: dict[str, Any], tmp_path: Path, name: str) -> None:
    got = _fetched(data_ctx)
    assert got.path == _cache(tmp_path) / name
    assert got.sha256 == data_ctx["sha256"] == hashlib.sha256(got.path.read_bytes()).hexdigest()
    assert got.size_bytes == len(data_ctx["payload"])


@then(parsers.parse("progress was reported from the first bytes up to the full {size}"))
def _progress_full(data_ctx: dict[str, Any], size: str) -> None:
    events: list[FetchProgress] = data_ctx["progress"]
    total = parse_size(size)
    assert len(events) >= 2
    assert events[0].bytes_done == 0 and events[-1].bytes_done == total
    assert [e.bytes_done for e in events] == sorted(e.bytes_done for e in events)
    assert all(e.bytes_total == total for e in events)
    assert events[-1].fraction == 1.0 and events[-1].bytes_per_s > 0


@then("nothing half-done is left in the model cache")
def _nothing_half_done(data_ctx: dict[str, Any], tmp_path: Path) -> None:
    paths = cache_paths(_cache(tmp_path), _fetched(data_ctx).model_id)
    assert not paths.part.exists()
    assert paths.sidecar.exists(), "the verified sha256 is recorded beside the file"
    assert data_ctx["sha256"] in paths.sidecar.read_text()


@then(parsers.parse('provisioning fails with "{code}" and a hint to run it again to resume'))
def _fails_resumable(data_ctx: dict[str, Any], tmp_path: Path, code: str) -> None:
    error = data_ctx["result"]
    assert isinstance(error, ModelFetchError) and error.code == code, error
    assert data_ctx["url"] in error.message
    part = cache_paths(_cache(tmp_path), "tiny-q4").part
    assert str(part) in error.hint and "resume" in error.hint


@then(parsers.parse("the partial file holds the first {size} of the model"))
def _partial(data_ctx: dict[str, Any], tmp_path: Path, size: str) -> None:
    part = cache_paths(_cache(tmp_path), "tiny-q4").part
    assert part.read_bytes() == data_ctx["payload"][: parse_size(size)]
    assert not cache_paths(_cache(tmp_path), "tiny-q4").final.exists()


@then(parsers.parse("the second download asked the server for the bytes from {size} on"))
def _asked_range(data_ctx: dict[str, Any], size: str) -> None:
    second = data_ctx["server"].requests(data_ctx["path"])[data_ctx["requests_before"] :]
    assert len(second) == 1
    assert second[0].range == f"bytes={parse_size(size)}-" and second[0].status == 206


@then(parsers.parse("progress reports say the download resumed from {size}"))
def _resumed_from(data_ctx: dict[str, Any], size: str) -> None:
    events: list[FetchProgress] = data_ctx["progress"]
    assert events and all(e.resumed_from == parse_size(size) for e in events)
    assert events[0].bytes_done == parse_size(size)


@then("the server sent every byte of the model exactly once")
def _each_byte_once(data_ctx: dict[str, Any]) -> None:
    sent = sum(r.bytes_sent for r in data_ctx["server"].requests(data_ctx["path"]))
    assert sent == len(data_ctx["payload"])


@then(parsers.parse('provisioning fails with "{code}" naming the expected and the actual sha256'))
def _fails_checksum(data_ctx: dict[str, Any], code: str) -> None:
    error = data_ctx["result"]
    assert isinstance(error, ModelFetchError) and error.code == code, error
    assert data_ctx["wrong_sha"] in error.message and data_ctx["sha256"] in error.message


@then(parsers.parse('the model cache holds nothing of "{model_id}", not even a partial file'))
def _nothing_of(tmp_path: Path, model_id: str) -> None:
    paths = cache_paths(_cache(tmp_path), model_id)
    assert not paths.final.exists() and not paths.part.exists() and not paths.sidecar.exists()


@then("both get the same verified file")
def _both_same(data_ctx: dict[str, Any]) -> None:
    results = data_ctx["results"]
    assert len(results) == 2 and all(isinstance(r, FetchedModel) for r in results), results
    first, second = results
    assert first.path == second.path and first.sha256 == second.sha256 == data_ctx["sha256"]
    assert first.path.read_bytes() == data_ctx["payload"]


@then("the server sent the model only once")
def _sent_once(data_ctx: dict[str, Any]) -> None:
    requests = data_ctx["server"].requests(data_ctx["path"])
    assert len(requests) == 1 and requests[0].bytes_sent == len(data_ctx["payload"])


@then("one of them downloaded it while the other found it in the cache")
def _one_downloaded(data_ctx: dict[str, Any]) -> None:
    assert sorted(r.fetched for r in data_ctx["results"]) == [False, True]


@then("the model came from the cache without any request to the server")
def _from_cache(data_ctx: dict[str, Any]) -> None:
    got = _fetched(data_ctx)
    assert not got.fetched and got.sha256 == data_ctx["sha256"]
    assert len(data_ctx["server"].requests()) == data_ctx["requests_before"]
    assert data_ctx["progress"] == []


@then(parsers.parse('provisioning fails with "{code}" naming the URL'))
def _fails_not_found(data_ctx: dict[str, Any], code: str) -> None:
    error = data_ctx["result"]
    assert isinstance(error, ModelFetchError) and error.code == code, error
    assert data_ctx["missing_url"] in error.message and "404" in error.message
    assert error.hint, "a hint says what to check"
