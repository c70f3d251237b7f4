"""Fetch a model of the spec once into the control machine's cache: locked, resumable, verified, atomic.

The entry point; the parts live beside it: :mod:`rbee.models.sources` (what a ``source`` means),
:mod:`rbee.models.cache` (layout, lock, sidecars), :mod:`rbee.models.part` (the ``.part`` file) and
:mod:`rbee.models.download` (the resumable transfer).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from rbee.models import cache
from rbee.models.cache import CachePaths, FetchedModel, cache_paths
from rbee.models.download import copy_file, download, http_client
from rbee.models.errors import ModelFetchError
from rbee.models.part import NOT_GGUF_HINT, PartFile, human_size
from rbee.models.progress import ProgressCallback
from rbee.models.sources import ResolvedSource, resolve_source
from rbee.spec.models import ModelSpec

__all__ = [
    "CachePaths",
    "FetchedModel",
    "ResolvedSource",
    "cache_paths",
    "cached_model",
    "fetch_model",
    "resolve_source",
]


def cached_model(model: ModelSpec, cache_dir: Path) -> FetchedModel | None:
    """The verified cached copy of ``model``, or None when it must be fetched (reads only; takes no lock)."""
    return cache.verified_entry(model, cache_paths(cache_dir, model.id), record=False)


def fetch_model(
    model: ModelSpec,
    cache_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    http: httpx.Client | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    free_bytes: Callable[[Path], int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchedModel:
    """Make sure ``<cache_dir>/<model.id>.gguf`` holds the verified model, fetching it when needed.

    ``retries``: failed attempts in a row without new bytes before DOWNLOAD_FAILED (an attempt that moved
    the download forward resets the count); the waits between them double from ``backoff_s`` (capped at 60 s),
    or follow the server's ``Retry-After``. ``http``: the client to use (its timeouts apply; the read timeout
    is the stall limit). ``free_bytes`` and ``sleep`` are injectable for tests.
    Raises :class:`ModelFetchError`.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    resolved = resolve_source(model.source)
    paths = cache_paths(cache_dir, model.id)
    try:
        paths.final.parent.mkdir(parents=True, exist_ok=True)
        with cache.locked(paths.lock):
            part = PartFile(model.id, paths.part, progress, free_bytes or cache.disk_free)
            return _fetch_locked(model, resolved, paths, part, http, retries, backoff_s, sleep)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _disk_full(model.id, paths, error) from error
        raise ModelFetchError(
            "CACHE_ERROR",
            f"{model.id}: cannot use the model cache {paths.final.parent}: {error}",
            "check that the folder is writable by the user running rbee (or set deploy.model_cache)",
        ) from error


def _disk_full(model_id: str, paths: CachePaths, error: OSError) -> ModelFetchError:
    """INSUFFICIENT_DISK for a disk that filled up during the transfer: the disk, its free bytes, the part kept."""
    folder = paths.final.parent
    try:
        free = f"{human_size(cache.disk_free(folder))} ({cache.disk_free(folder)} bytes) free"
    except OSError:
        free = "free space unknown"
    try:
        kept = paths.part.stat().st_size
    except OSError:
        kept = 0
    return ModelFetchError(
        "INSUFFICIENT_DISK",
        f"{model_id}: the disk of {folder} filled up during the transfer ({free}; {error.strerror or error})",
        f"free some space and run again: the {human_size(kept)} received are kept in {paths.part} and the "
        "transfer resumes there; or set deploy.model_cache to a folder on a larger disk",
    )


def _fetch_locked(
    model: ModelSpec,
    resolved: ResolvedSource,
    paths: CachePaths,
    part: PartFile,
    http: httpx.Client | None,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None],
) -> FetchedModel:
    """The body of :func:`fetch_model`, run while holding the model's lock."""
    hit = cache.verified_entry(model, paths, record=True)
    if hit is not None:
        return hit
    if resolved.path is not None and cache.same_file(resolved.path, paths.final):
        raise ModelFetchError(  # never delete the operator's own file
            "CHECKSUM_MISMATCH",
            f"{paths.final} is both the source and the cache entry of {model.id}, and it does not verify",
            "point the source at the original file, or fix the sha256 in the spec",
        )
    cache.remove(paths.final, paths.sidecar)

    def run() -> FetchedModel:
        """Transfer (resuming the ``.part``), verify, promote; the verified entry."""
        try:
            if resolved.path is not None:
                copy_file(resolved.path, part)
            elif http is not None:
                download(http, resolved, part, retries=retries, backoff_s=backoff_s, sleep=sleep)
            else:
                with http_client() as client:
                    download(client, resolved, part, retries=retries, backoff_s=backoff_s, sleep=sleep)
            return _verify_and_promote(model, resolved, paths, part)
        except ModelFetchError as error:
            if error.code in ("NOT_GGUF", "CHECKSUM_MISMATCH"):
                part.restart()  # wrong bytes: nothing worth resuming
            raise

    had_part = paths.part.exists()
    try:
        return run()
    except ModelFetchError as error:
        if error.code != "CHECKSUM_MISMATCH" or not had_part:
            raise
        # The .part left by an earlier run may come from another version of the file: once more from 0.
        return run()


def _verify_and_promote(model: ModelSpec, resolved: ResolvedSource, paths: CachePaths, part: PartFile) -> FetchedModel:
    """Check the complete ``.part`` (GGUF magic, the spec's sha256) and move it into the cache."""
    if not cache.has_gguf_magic(paths.part):
        head = cache.head(paths.part)
        part.restart()
        raise ModelFetchError(
            "NOT_GGUF", f"{model.id}: {resolved.url} is not a GGUF file (it starts with {head!r})", NOT_GGUF_HINT
        )
    digest = part.digest()
    if model.sha256 is not None and digest != model.sha256:
        part.restart()  # a complete file with the wrong bytes cannot be resumed
        raise ModelFetchError(
            "CHECKSUM_MISMATCH",
            f"{model.id}: the file from {resolved.url} has sha256 {digest}, "
            f"the spec expects {model.sha256}; it was deleted, not cached",
            "if the file changed upstream on purpose, update sha256 in the spec (or remove it)",
        )
    return cache.promote(paths, model, digest)
