"""The control machine's model cache: file layout, the per-model lock, sha256 sidecars, verified entries.

Layout, for a model ``ID``::

    <cache>/ID.gguf          the verified file (only ever appears through os.replace of a fsynced file)
    <cache>/ID.gguf.sha256   JSON sidecar: sha256, size, mtime_ns, source, and for a file:// source its size
                             and mtime_ns (skips re-hashing on the next run; a changed local source is copied again)
    <cache>/ID.gguf.part     the download in progress (kept after a failure, resumed by the next run)
    <cache>/ID.gguf.lock     flock'ed while a process works on ID (a dead holder releases it)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbee.models.errors import ModelFetchError
from rbee.models.sources import resolve_source
from rbee.spec.models import ModelSpec
from rbee.spec.types import MODEL_ID_PATTERN

GGUF_MAGIC = b"GGUF"
CHUNK_BYTES = 1 << 20

_MODEL_ID = re.compile(MODEL_ID_PATTERN)


@dataclass(frozen=True)
class FetchedModel:
    """A verified model file in the cache."""

    model_id: str
    path: Path
    size_bytes: int
    sha256: str
    fetched: bool
    """False when the cache already held a verified copy (nothing was transferred)."""


@dataclass(frozen=True)
class CachePaths:
    """The files of one model in the cache folder."""

    final: Path
    sidecar: Path
    part: Path
    lock: Path


def cache_paths(cache_dir: Path, model_id: str) -> CachePaths:
    """The cache files of ``model_id`` under ``cache_dir`` (``~`` expanded)."""
    if not _MODEL_ID.match(model_id):
        raise ValueError(f"invalid model id {model_id!r}")
    final = cache_dir.expanduser() / f"{model_id}.gguf"
    return CachePaths(
        final=final,
        sidecar=final.with_name(final.name + ".sha256"),
        part=final.with_name(final.name + ".part"),
        lock=final.with_name(final.name + ".lock"),
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (blocking; released on exit or when the process dies)."""
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def verified_entry(model: ModelSpec, paths: CachePaths, *, record: bool) -> FetchedModel | None:
    """The cache entry when it verifies (sidecar fresh, or re-hashed); ``record`` rewrites a stale sidecar."""
    try:
        stat = paths.final.stat()
    except FileNotFoundError:
        return None
    if not has_gguf_magic(paths.final):
        return None
    recorded = _read_sidecar(paths.sidecar)
    fresh = (
        recorded is not None
        and recorded.get("size") == stat.st_size
        and recorded.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(recorded.get("sha256"), str)
    )
    digest = str(recorded["sha256"]) if fresh and recorded is not None else hash_file(paths.final)
    if model.sha256 is not None:
        accepted = digest == model.sha256
    else:  # no expected hash: trust the file as long as it came from the same source, unchanged when local
        local = source_stamp(model)
        accepted = recorded is None or (
            recorded.get("source") == model.source and (local is None or recorded.get("source_stamp") == local)
        )
    if not accepted:
        return None
    if record and not fresh:
        _write_sidecar(paths, digest, model)
    return FetchedModel(model.id, paths.final, stat.st_size, digest, fetched=False)


def promote(paths: CachePaths, model: ModelSpec, digest: str) -> FetchedModel:
    """Move the verified ``.part`` (sha256 ``digest``) into place and record its sidecar."""
    paths.part.replace(paths.final)  # the .part was fsynced when its writing ended
    fsync_folder(paths.final.parent)
    _write_sidecar(paths, digest, model)
    return FetchedModel(model.id, paths.final, paths.final.stat().st_size, digest, fetched=True)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def source_stamp(model: ModelSpec) -> list[int] | None:
    """``[size, mtime_ns]`` of a ``file://`` source (None for a remote source, or a local file now missing)."""
    if not model.source.startswith("file://"):
        return None
    try:
        path = resolve_source(model.source).path
        stat = path.stat() if path is not None else None
    except (ModelFetchError, OSError):
        return None
    return [stat.st_size, stat.st_mtime_ns] if stat is not None else None


def _write_sidecar(paths: CachePaths, digest: str, model: ModelSpec) -> None:
    stat = paths.final.stat()
    record: dict[str, Any] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record["source"] = model.source
    if (stamp := source_stamp(model)) is not None:
        record["source_stamp"] = stamp
    tmp = paths.sidecar.with_name(paths.sidecar.name + ".tmp")
    with tmp.open("w") as out:
        out.write(json.dumps(record, indent=1) + "\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(paths.sidecar)
    fsync_folder(paths.sidecar.parent)


def fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (fsync of the directory)."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


# --- file helpers ---------------------------------------------------------------------------------


def hasher_of(path: Path) -> hashlib._Hash:
    """A sha256 hasher fed with the whole file."""
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher


def hash_file(path: Path) -> str:
    """The sha256 of a file, hex."""
    return str(hasher_of(path).hexdigest())


def head(path: Path) -> bytes:
    """The first bytes of a file (as many as the GGUF magic; empty when unreadable)."""
    try:
        with path.open("rb") as source:
            return source.read(len(GGUF_MAGIC))
    except OSError:
        return b""


def has_gguf_magic(path: Path) -> bool:
    """Whether the file starts like a GGUF file."""
    return head(path) == GGUF_MAGIC


def same_file(a: Path, b: Path) -> bool:
    """Whether both paths name the same existing file."""
    try:
        return a.samefile(b)
    except OSError:
        return False


def remove(*paths: Path) -> None:
    """Delete files that may not exist."""
    for path in paths:
        path.unlink(missing_ok=True)


def disk_free(folder: Path) -> int:
    """Free bytes on the disk of ``folder``."""
    return shutil.disk_usage(folder).free
