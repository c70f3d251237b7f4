"""file:// sources: copy into the cache, resume a .part, verify."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rbee.models import FetchProgress, ModelFetchError, cache_paths, fetch_model
from rbee.spec.models import ModelSpec


def test_file_copy_is_verified_and_cached(tiny_model_path: Path, tmp_path: Path) -> None:
    sha = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    model = ModelSpec(id="tiny", source=tiny_model_path.as_uri(), sha256=sha)
    events: list[FetchProgress] = []

    got = fetch_model(model, tmp_path / "cache", progress=events.append)

    assert got.fetched is True
    assert got.path == tmp_path / "cache" / "tiny.gguf"
    assert got.path.read_bytes() == tiny_model_path.read_bytes()
    assert (got.sha256, got.size_bytes) == (sha, tiny_model_path.stat().st_size)
    sidecar = json.loads((tmp_path / "cache" / "tiny.gguf.sha256").read_text())
    assert sidecar["sha256"] == sha and sidecar["size"] == got.size_bytes
    assert not cache_paths(tmp_path / "cache", "tiny").part.exists()
    assert events[-1].bytes_done == events[-1].bytes_total == got.size_bytes

    again = fetch_model(model, tmp_path / "cache")
    assert again.fetched is False and again.sha256 == sha and again.path == got.path


def test_file_copy_resumes_a_part(tmp_path: Path, payload: bytes, payload_sha: str) -> None:
    source = tmp_path / "src.gguf"
    source.write_bytes(payload)
    cache = tmp_path / "cache"
    cache.mkdir()
    half = len(payload) // 2
    cache_paths(cache, "m").part.write_bytes(payload[:half])
    events: list[FetchProgress] = []

    got = fetch_model(ModelSpec(id="m", source=source.as_uri(), sha256=payload_sha), cache, progress=events.append)

    assert got.fetched and got.sha256 == payload_sha and got.path.read_bytes() == payload
    assert events[0].resumed_from == half and events[0].bytes_done == half


def test_file_without_spec_sha_records_the_computed_one(tmp_path: Path, payload: bytes, payload_sha: str) -> None:
    source = tmp_path / "src.gguf"
    source.write_bytes(payload)
    got = fetch_model(ModelSpec(id="m", source=source.as_uri()), tmp_path / "cache")
    assert got.sha256 == payload_sha
    assert json.loads(cache_paths(tmp_path / "cache", "m").sidecar.read_text())["sha256"] == payload_sha


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(ModelSpec(id="m", source="file:///nonexistent/dir/m.gguf"), tmp_path)
    assert caught.value.code == "MODEL_NOT_FOUND"
    assert "/nonexistent/dir/m.gguf" in caught.value.message


def test_file_checksum_mismatch_is_refused(tmp_path: Path, payload: bytes) -> None:
    source = tmp_path / "src.gguf"
    source.write_bytes(payload)
    model = ModelSpec(id="m", source=source.as_uri(), sha256="ab" * 32)
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(model, tmp_path / "cache")
    assert caught.value.code == "CHECKSUM_MISMATCH"
    assert "ab" * 32 in caught.value.message and hashlib.sha256(payload).hexdigest() in caught.value.message
    paths = cache_paths(tmp_path / "cache", "m")
    assert not paths.final.exists() and not paths.part.exists() and not paths.sidecar.exists()


def test_file_not_gguf_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src.gguf"
    source.write_bytes(b"<html>login</html>" * 100)
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(ModelSpec(id="m", source=source.as_uri()), tmp_path / "cache")
    assert caught.value.code == "NOT_GGUF"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m.gguf.lock"]


def test_file_insufficient_disk(tmp_path: Path, payload: bytes) -> None:
    source = tmp_path / "src.gguf"
    source.write_bytes(payload)
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(ModelSpec(id="m", source=source.as_uri()), tmp_path / "cache", free_bytes=lambda _: 1000)
    assert caught.value.code == "INSUFFICIENT_DISK"
    assert "1000 B" in caught.value.message and "3.0 MiB" in caught.value.message


def test_source_that_is_the_cache_entry_is_never_deleted(tmp_path: Path, payload: bytes) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    own = cache / "m.gguf"
    own.write_bytes(payload)
    got = fetch_model(ModelSpec(id="m", source=own.as_uri()), cache)
    assert got.fetched is False and got.path == own
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(ModelSpec(id="m", source=own.as_uri(), sha256="cd" * 32), cache)
    assert caught.value.code == "CHECKSUM_MISMATCH"
    assert own.read_bytes() == payload


def test_unusable_cache_folder_is_cache_error(tmp_path: Path, payload: bytes) -> None:
    source = tmp_path / "src.gguf"
    source.write_bytes(payload)
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file")
    with pytest.raises(ModelFetchError) as caught:
        fetch_model(ModelSpec(id="m", source=source.as_uri()), not_a_folder)
    assert caught.value.code == "CACHE_ERROR" and str(not_a_folder) in caught.value.message
