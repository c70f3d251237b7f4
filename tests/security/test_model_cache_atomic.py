"""The control machine's model cache writes durably and notices a changed local source.

Every file reaches its name by rename of a fsynced file, and the folder is fsynced after the rename
(checked by watching the real ``os.fsync`` calls); a ``file://`` source changed in place (same path,
no sha256 in the spec) is copied again instead of the stale cached copy being deployed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rbee.models import cache_paths, cached_model, fetch_model
from rbee.spec.models import ModelSpec
from rbee.tiny_model import write_tiny_model


def test_a_local_source_changed_in_place_is_copied_again(tmp_path: Path) -> None:
    source = write_tiny_model(tmp_path / "model.gguf", seed=0)
    model = ModelSpec(id="tiny", source=source.as_uri())
    first = fetch_model(model, tmp_path / "cache")
    assert fetch_model(model, tmp_path / "cache").fetched is False  # unchanged: the cached copy
    write_tiny_model(source, seed=1)
    assert cached_model(model, tmp_path / "cache") is None
    again = fetch_model(model, tmp_path / "cache")
    assert again.fetched and again.sha256 != first.sha256
    assert again.path.read_bytes() == source.read_bytes()
    assert fetch_model(model, tmp_path / "cache").fetched is False


def test_a_local_source_gone_still_serves_the_cached_copy(tmp_path: Path) -> None:
    source = write_tiny_model(tmp_path / "model.gguf", seed=0)
    model = ModelSpec(id="tiny", source=source.as_uri())
    first = fetch_model(model, tmp_path / "cache")
    source.unlink()
    again = fetch_model(model, tmp_path / "cache")
    assert again.fetched is False and again.sha256 == first.sha256


def test_the_model_and_its_sidecar_are_fsynced_before_and_after_their_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync: Callable[[int], None] = os.fsync

    def watched(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watched)
    source = write_tiny_model(tmp_path / "model.gguf", seed=0)
    cache = tmp_path / "cache"
    fetch_model(ModelSpec(id="tiny", source=source.as_uri()), cache)
    paths = cache_paths(cache, "tiny")
    part, sidecar_tmp = str(paths.part), str(paths.sidecar) + ".tmp"
    assert synced == [part, str(cache), sidecar_tmp, str(cache)], synced
