"""Fetch a model of the spec once into the control machine's cache: locked, resumable, verified, atomic.

Cache layout, for a model ``ID``::

    <cache>/ID.gguf          the verified file (only ever appears through os.replace)
    <cache>/ID.gguf.sha256   JSON sidecar: sha256, size, mtime_ns, source (skips re-hashing on the next run)
    <cache>/ID.gguf.part     the download in progress (kept after a failure, resumed by the next run)
    <cache>/ID.gguf.lock     flock'ed while a process works on ID (a dead holder releases it)
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from rbee import __version__
from rbee.models.errors import ModelFetchError
from rbee.models.progress import FetchProgress, ProgressCallback
from rbee.spec.models import ModelSpec
from rbee.spec.types import MODEL_ID_PATTERN

GGUF_MAGIC = b"GGUF"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
"""Read timeout 60 s: a transfer that stalls that long is retried (resuming)."""
CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_S = 0.25
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 300.0

_MODEL_ID = re.compile(MODEL_ID_PATTERN)
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.IGNORECASE)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


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
class ResolvedSource:
    """Where a spec ``source`` is fetched from."""

    url: str
    """The URL fetched (``file://`` sources keep theirs)."""
    path: Path | None = None
    """The local file of a ``file://`` source."""
    hf_repo: str | None = None
    """``OWNER/REPO`` of an ``hf:`` source (HF_TOKEN is sent to it)."""


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


def resolve_source(source: str, env: dict[str, str] | None = None) -> ResolvedSource:
    """The URL (or local path) of a spec source; ``hf:`` goes to ``$HF_ENDPOINT`` (default huggingface.co)."""
    environ = os.environ if env is None else env
    if source.startswith("hf:"):
        owner, repo, filename = source[3:].split("/", 2)
        endpoint = (environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
        url = f"{endpoint}/{owner}/{repo}/resolve/main/{quote(filename)}"
        _check_http_url(url, source)
        return ResolvedSource(url=url, hf_repo=f"{owner}/{repo}")
    if source.startswith("file://"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ModelFetchError(
                "UNSUPPORTED_SOURCE",
                f"file source {source} does not name a local absolute path",
                "write file:///abs/path/model.gguf",
            )
        return ResolvedSource(url=source, path=Path(unquote(parts.path)))
    if source.startswith(("https://", "http://")):
        _check_http_url(source, source)
        return ResolvedSource(url=source)
    raise ModelFetchError(
        "UNSUPPORTED_SOURCE",
        f"cannot fetch source {source!r}",
        "use hf:OWNER/REPO/FILE.gguf, file:///abs/path.gguf or https://host/path.gguf",
    )


def _check_http_url(url: str, source: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOCAL_HOSTS:
        return
    raise ModelFetchError(
        "UNSUPPORTED_SOURCE",
        f"refusing to fetch {url} (from source {source}): only https is allowed",
        "use an https:// URL (plain http is accepted only from 127.0.0.1/localhost)",
    )


def cached_model(model: ModelSpec, cache_dir: Path) -> FetchedModel | None:
    """The verified cached copy of ``model``, or None when it must be fetched (reads only; takes no lock)."""
    return _verified_cache_entry(model, cache_paths(cache_dir, model.id), record=False)


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
        with _locked(paths.lock):
            return _fetch_locked(model, resolved, paths, progress, http, retries, backoff_s, free_bytes, sleep)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise ModelFetchError(
                "INSUFFICIENT_DISK",
                f"{model.id}: the disk of {paths.final.parent} is full ({error})",
                f"free some space (the partial download is kept in {paths.part}), or set deploy.model_cache "
                "to a folder on a larger disk",
            ) from error
        raise ModelFetchError(
            "CACHE_ERROR",
            f"{model.id}: cannot use the model cache {paths.final.parent}: {error}",
            "check that the folder is writable by the user running rbee (or set deploy.model_cache)",
        ) from error


def _fetch_locked(
    model: ModelSpec,
    resolved: ResolvedSource,
    paths: CachePaths,
    progress: ProgressCallback | None,
    http: httpx.Client | None,
    retries: int,
    backoff_s: float,
    free_bytes: Callable[[Path], int] | None,
    sleep: Callable[[float], None],
) -> FetchedModel:
    """The body of :func:`fetch_model`, run while holding the model's lock."""
    hit = _verified_cache_entry(model, paths, record=True)
    if hit is not None:
        return hit
    if resolved.path is not None and _same_file(resolved.path, paths.final):
        raise ModelFetchError(  # never delete the operator's own file
            "CHECKSUM_MISMATCH",
            f"{paths.final} is both the source and the cache entry of {model.id}, and it does not verify",
            "point the source at the original file, or fix the sha256 in the spec",
        )
    _remove(paths.final, paths.sidecar)
    fetcher = _Fetcher(
        model=model,
        resolved=resolved,
        paths=paths,
        progress=progress,
        retries=retries,
        backoff_s=backoff_s,
        free_bytes=free_bytes or _disk_free,
        sleep=sleep,
    )
    had_part = paths.part.exists()
    try:
        return fetcher.run(http)
    except ModelFetchError as error:
        if error.code != "CHECKSUM_MISMATCH" or not had_part:
            raise
        # The .part left by an earlier run may come from another version of the file: once more from 0.
        return fetcher.run(http)


# --- the cache entry ------------------------------------------------------------------------------


def _verified_cache_entry(model: ModelSpec, paths: CachePaths, *, record: bool) -> FetchedModel | None:
    """The cache entry when it verifies (sidecar fresh, or re-hashed); ``record`` rewrites a stale sidecar."""
    try:
        stat = paths.final.stat()
    except FileNotFoundError:
        return None
    if not _has_gguf_magic(paths.final):
        return None
    recorded = _read_sidecar(paths.sidecar)
    fresh = (
        recorded is not None
        and recorded.get("size") == stat.st_size
        and recorded.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(recorded.get("sha256"), str)
    )
    digest = str(recorded["sha256"]) if fresh and recorded is not None else _hash_file(paths.final)
    if model.sha256 is not None:
        accepted = digest == model.sha256
    else:  # no expected hash: trust the file as long as it came from the same source
        accepted = recorded is None or recorded.get("source") == model.source
    if not accepted:
        return None
    if record and not fresh:
        _write_sidecar(paths, digest, model.source)
    return FetchedModel(model.id, paths.final, stat.st_size, digest, fetched=False)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_sidecar(paths: CachePaths, digest: str, source: str) -> None:
    stat = paths.final.stat()
    record = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "source": source}
    tmp = paths.sidecar.with_name(paths.sidecar.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(paths.sidecar)


# --- the transfer ---------------------------------------------------------------------------------


class _TransientError(Exception):
    """A failure worth another attempt (5xx, 429, a short body); ``retry_after`` from the server."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_RETRYABLE = (_TransientError, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class _PartFile:
    """The ``.part`` file, the sha256 of the bytes in it, and the progress reports of the writes."""

    def __init__(
        self, model_id: str, path: Path, progress: ProgressCallback | None, free_bytes: Callable[[Path], int]
    ) -> None:
        self.model_id = model_id
        self.path = path
        self._progress = progress
        self._free_bytes = free_bytes
        self._hasher = hashlib.sha256()
        self._hashed = 0
        self._out: IO[bytes] | None = None
        self._total: int | None = None
        self._resumed_from = 0
        self._started = 0.0
        self._reported = 0.0
        self._head = b""

    def size(self) -> int:
        """Bytes in the ``.part`` file (0 when there is none)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def restart(self) -> None:
        """Drop the bytes received so far."""
        _remove(self.path)
        self._hasher, self._hashed = hashlib.sha256(), 0

    @contextlib.contextmanager
    def writing(self, start: int, total: int | None) -> Iterator[None]:
        """Write the file from ``start`` (its current size, or 0 to restart) towards ``total`` bytes."""
        current = self.size()
        if start not in (0, current):
            raise AssertionError(f"cannot write {self.path} from {start}: it holds {current} bytes")
        if total is not None:
            needed, available = total - start, self._free_bytes(self.path.parent)
            if needed > available:
                raise ModelFetchError(
                    "INSUFFICIENT_DISK",
                    f"{self.model_id} needs {_human(needed)} more in {self.path.parent}, "
                    f"only {_human(available)} are free",
                    "free some space, or set deploy.model_cache to a folder on a larger disk",
                )
        if start == 0:
            self._hasher, self._hashed = hashlib.sha256(), 0
        elif self._hashed != start:  # resuming a .part of an earlier run: hash what is there first
            self._hasher, self._hashed = _hasher_of(self.path), start
        self._total, self._resumed_from, self._head = total, start, b""
        self._started = self._reported = time.monotonic()
        self._report(force=True)
        with self.path.open("ab" if start else "wb") as out:
            self._out = out
            try:
                yield
            finally:
                self._out = None
                out.flush()
                os.fsync(out.fileno())
                self._report(force=True)

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (refusing a fresh file that does not start like a GGUF)."""
        if self._out is None:
            raise AssertionError("write() outside writing()")
        if self._resumed_from == 0 and len(self._head) < len(GGUF_MAGIC):
            self._head += chunk[: len(GGUF_MAGIC) - len(self._head)]
            if len(self._head) == len(GGUF_MAGIC) and self._head != GGUF_MAGIC:
                raise ModelFetchError(
                    "NOT_GGUF",
                    f"{self.model_id}: the source is not a GGUF file (it starts with {self._head!r})",
                    _NOT_GGUF_HINT,
                )
        self._out.write(chunk)
        self._hasher.update(chunk)
        self._hashed += len(chunk)
        self._report()

    def digest(self) -> str:
        """sha256 of the whole ``.part`` file."""
        if self._hashed != self.size():
            self._hasher, self._hashed = _hasher_of(self.path), self.size()
        return self._hasher.hexdigest()

    def _report(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._reported < PROGRESS_INTERVAL_S:
            return
        self._reported = now
        elapsed = now - self._started
        done = self._hashed
        speed = (done - self._resumed_from) / elapsed if elapsed > 0 else 0.0
        self._progress(FetchProgress(self.model_id, done, self._total, speed, self._resumed_from))


_NOT_GGUF_HINT = (
    "rbee serves GGUF models only: point the source at a .gguf file "
    "(a file starting with '<' is usually an HTML login or error page)"
)


class _Fetcher:
    """One fetch of one model into its ``.part`` file, verified and promoted."""

    def __init__(
        self,
        *,
        model: ModelSpec,
        resolved: ResolvedSource,
        paths: CachePaths,
        progress: ProgressCallback | None,
        retries: int,
        backoff_s: float,
        free_bytes: Callable[[Path], int],
        sleep: Callable[[float], None],
    ) -> None:
        self.model = model
        self.resolved = resolved
        self.paths = paths
        self.part = _PartFile(model.id, paths.part, progress, free_bytes)
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._etag: str | None = None

    def run(self, http: httpx.Client | None) -> FetchedModel:
        """Transfer (resuming a ``.part``), verify, promote; the verified entry."""
        try:
            if self.resolved.path is not None:
                self._copy(self.resolved.path)
            elif http is not None:
                self._download(http)
            else:
                with httpx.Client(timeout=DEFAULT_TIMEOUT, headers={"User-Agent": f"rbee/{__version__}"}) as client:
                    self._download(client)
            return self._promote()
        except ModelFetchError as error:
            if error.code in ("NOT_GGUF", "CHECKSUM_MISMATCH"):
                self.part.restart()  # wrong bytes: nothing worth resuming
            raise

    # file://

    def _copy(self, source: Path) -> None:
        try:
            src = source.open("rb")
            total = os.fstat(src.fileno()).st_size
        except FileNotFoundError as error:
            raise ModelFetchError(
                "MODEL_NOT_FOUND",
                f"{self.model.id}: {source} does not exist",
                "check the path in the model's source (file:///abs/path.gguf on the control machine)",
            ) from error
        except PermissionError as error:
            raise ModelFetchError(
                "ACCESS_DENIED",
                f"{self.model.id}: cannot read {source} ({error.strerror})",
                "make the file readable by the user running rbee",
            ) from error
        except IsADirectoryError as error:
            raise ModelFetchError(
                "MODEL_NOT_FOUND", f"{self.model.id}: {source} is a folder, not a .gguf file", ""
            ) from error
        with src:
            start = self.part.size()
            if start > total:
                start = 0
            src.seek(start)
            with self.part.writing(start, total):
                while chunk := src.read(CHUNK_BYTES):
                    self.part.write(chunk)

    # http(s)://

    def _download(self, client: httpx.Client) -> None:
        streak = 0  # failed attempts in a row without new bytes
        attempts = 0

        def stop(state: RetryCallState) -> bool:
            return streak > self.retries

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            if isinstance(error, _TransientError) and error.retry_after is not None:
                return min(error.retry_after, MAX_RETRY_AFTER_S)
            return float(min(self.backoff_s * 2 ** max(streak - 1, 0), MAX_BACKOFF_S))

        retrying = Retrying(
            retry=retry_if_exception_type(_RETRYABLE), stop=stop, wait=wait, sleep=self.sleep, reraise=True
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    before = self.part.size()
                    try:
                        self._attempt(client)
                    except _RETRYABLE:
                        streak = 1 if self.part.size() > before else streak + 1
                        raise
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            if not isinstance(error, _RETRYABLE):  # e.g. too many redirects, an unsupported redirect target
                raise ModelFetchError(
                    "DOWNLOAD_FAILED",
                    f"downloading {self.model.id} from {self.resolved.url} failed: {_describe(error)}",
                    "check the URL in the model's source",
                ) from error
            raise self._failed(error, attempts) from error
        except _TransientError as error:
            raise self._failed(error, attempts) from error

    def _failed(self, error: BaseException, attempts: int) -> ModelFetchError:
        """The DOWNLOAD_FAILED error once the retries are spent."""
        kept = self.part.size()
        hint = (
            f"the {_human(kept)} received are kept in {self.paths.part}: run again to resume"
            if kept
            else "check the network and that the URL is reachable from this machine"
        )
        return ModelFetchError(
            "DOWNLOAD_FAILED",
            f"downloading {self.model.id} from {self.resolved.url} failed after {attempts} attempts: "
            f"{_describe(error)}",
            hint,
        )

    def _attempt(self, client: httpx.Client) -> None:
        offset = self.part.size()
        headers = {"Accept-Encoding": "identity"}
        token = os.environ.get("HF_TOKEN", "").strip()
        if self.resolved.hf_repo is not None and token:
            headers["Authorization"] = f"Bearer {token}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self._etag:
                headers["If-Range"] = self._etag
        with client.stream("GET", self.resolved.url, headers=headers, follow_redirects=True) as response:
            status = response.status_code
            if status == 416 and offset:
                _, _, total = _content_range(response.headers.get("content-range"))
                if total == offset:
                    return  # the .part is already complete: verification decides
                self.part.restart()
                raise _TransientError(f"server refused the range {offset}- (file size {total}); restarting", 0.0)
            self._check_status(response)
            length = _int_or_none(response.headers.get("content-length"))
            if status == 206:
                first, _, total = _content_range(response.headers.get("content-range"))
                if first != offset:
                    self.part.restart()
                    raise _TransientError(f"server sent range {first}- instead of {offset}-; restarting", 0.0)
                start = offset
                if total is None and length is not None:
                    total = offset + length
            elif status == 200:
                start, total = 0, length  # a 200 to a range request: the server sends it all again
            else:
                raise ModelFetchError(
                    "DOWNLOAD_FAILED", f"{self.resolved.url} answered HTTP {status} (expected 200 or 206)", ""
                )
            etag = response.headers.get("etag")
            self._etag = etag if etag and not etag.startswith("W/") else None
            with self.part.writing(start, total):
                for chunk in response.iter_bytes():  # as received: nothing buffered is lost
                    self.part.write(chunk)
        got = self.part.size()
        if total is not None and got != total:
            if got > total:
                self.part.restart()
            raise _TransientError(f"connection ended after {got} of {total} bytes")

    def _check_status(self, response: httpx.Response) -> None:
        status, url = response.status_code, self.resolved.url
        if status < 400:
            return
        if status in _TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {status} from {url}", _retry_after(response.headers.get("retry-after")))
        if status == 404:
            hint = (
                f"check owner, repository and file name (case matters) at "
                f"https://huggingface.co/{self.resolved.hf_repo}/tree/main"
                if self.resolved.hf_repo
                else "check the URL in the model's source"
            )
            raise ModelFetchError("MODEL_NOT_FOUND", f"{self.model.id}: {url} was not found (HTTP 404)", hint)
        if status in (401, 403):
            if self.resolved.hf_repo is None:
                hint = "the server wants credentials rbee does not send: download the file and use file:///..."
            elif os.environ.get("HF_TOKEN", "").strip():
                hint = (
                    f"the token in HF_TOKEN has no access to {self.resolved.hf_repo}: accept the model's "
                    "licence on its Hugging Face page, or use a token that can read it"
                )
            else:
                hint = (
                    f"{self.resolved.hf_repo} is gated or private: set HF_TOKEN to a Hugging Face token "
                    "that can read it (and accept the licence on its page)"
                )
            raise ModelFetchError("ACCESS_DENIED", f"{self.model.id}: access to {url} denied (HTTP {status})", hint)
        raise ModelFetchError("DOWNLOAD_FAILED", f"{self.model.id}: {url} answered HTTP {status}", "")

    # verification

    def _promote(self) -> FetchedModel:
        part, paths = self.paths.part, self.paths
        if not _has_gguf_magic(part):
            head = _head(part)
            self.part.restart()
            raise ModelFetchError(
                "NOT_GGUF",
                f"{self.model.id}: {self.resolved.url} is not a GGUF file (it starts with {head!r})",
                _NOT_GGUF_HINT,
            )
        digest = self.part.digest()
        if self.model.sha256 is not None and digest != self.model.sha256:
            self.part.restart()  # a complete file with the wrong bytes cannot be resumed
            raise ModelFetchError(
                "CHECKSUM_MISMATCH",
                f"{self.model.id}: the file from {self.resolved.url} has sha256 {digest}, "
                f"the spec expects {self.model.sha256}; it was deleted, not cached",
                "if the file changed upstream on purpose, update sha256 in the spec (or remove it)",
            )
        part.replace(paths.final)
        _write_sidecar(paths, digest, self.model.source)
        return FetchedModel(self.model.id, paths.final, paths.final.stat().st_size, digest, fetched=True)


# --- small helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (blocking; released on exit or when the process dies)."""
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _disk_free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _hasher_of(path: Path) -> hashlib._Hash:
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher


def _hash_file(path: Path) -> str:
    return str(_hasher_of(path).hexdigest())


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            return source.read(len(GGUF_MAGIC))
    except OSError:
        return b""


def _has_gguf_magic(path: Path) -> bool:
    return _head(path) == GGUF_MAGIC


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of a ``Content-Range: bytes a-b/n`` header; None for what is missing."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None, None
    first, last, total = match.groups()
    return _int_or_none(first), _int_or_none(last), _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _retry_after(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
