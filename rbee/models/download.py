"""Resumable transfers into a :class:`PartFile`: HTTP(S) with Range/If-Range, retries and Retry-After; file copies."""

from __future__ import annotations

import email.utils
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from rbee import __version__
from rbee.models.cache import CHUNK_BYTES
from rbee.models.errors import ModelFetchError
from rbee.models.part import PartFile, human_size
from rbee.models.sources import ResolvedSource, access_denied_hint, auth_headers, not_found_hint

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
"""Read timeout 60 s: a transfer that stalls that long is retried (resuming)."""
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 300.0

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.IGNORECASE)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def http_client() -> httpx.Client:
    """The client used when the caller passes none (rbee's User-Agent, :data:`DEFAULT_TIMEOUT`)."""
    return httpx.Client(timeout=DEFAULT_TIMEOUT, headers={"User-Agent": f"rbee/{__version__}"})


def copy_file(source: Path, part: PartFile) -> None:
    """Copy a local file into ``part``, resuming from the bytes already there."""
    model_id = part.model_id
    try:
        src = source.open("rb")
        total = os.fstat(src.fileno()).st_size
    except FileNotFoundError as error:
        raise ModelFetchError(
            "MODEL_NOT_FOUND",
            f"{model_id}: {source} does not exist",
            "check the path in the model's source (file:///abs/path.gguf on the control machine)",
        ) from error
    except PermissionError as error:
        raise ModelFetchError(
            "ACCESS_DENIED",
            f"{model_id}: cannot read {source} ({error.strerror})",
            "make the file readable by the user running rbee",
        ) from error
    except IsADirectoryError as error:
        raise ModelFetchError("MODEL_NOT_FOUND", f"{model_id}: {source} is a folder, not a .gguf file", "") from error
    with src:
        start = part.size()
        if start > total:
            start = 0
        src.seek(start)
        with part.writing(start, total):
            while chunk := src.read(CHUNK_BYTES):
                part.write(chunk)


class _TransientError(Exception):
    """A failure worth another attempt (5xx, 429, a short body); ``retry_after`` from the server."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_RETRYABLE = (_TransientError, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def download(
    client: httpx.Client,
    resolved: ResolvedSource,
    part: PartFile,
    *,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None],
) -> None:
    """Download ``resolved`` into ``part``, resuming it; DOWNLOAD_FAILED after ``retries`` attempts without progress.

    The waits between attempts double from ``backoff_s`` (capped at 60 s), or follow the server's ``Retry-After``.
    """
    _Download(resolved, part, retries=retries, backoff_s=backoff_s, sleep=sleep).run(client)


class _Download:
    """The attempts of one HTTP(S) download (the ETag of the last answer guards the next Range request)."""

    def __init__(
        self,
        resolved: ResolvedSource,
        part: PartFile,
        *,
        retries: int,
        backoff_s: float,
        sleep: Callable[[float], None],
    ) -> None:
        self.resolved = resolved
        self.part = part
        self.model_id = part.model_id
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._etag: str | None = None

    def run(self, client: httpx.Client) -> None:
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
                    f"downloading {self.model_id} from {self.resolved.url} failed: {_describe(error)}",
                    "check the URL in the model's source",
                ) from error
            raise self._failed(error, attempts) from error
        except _TransientError as error:
            raise self._failed(error, attempts) from error

    def _failed(self, error: BaseException, attempts: int) -> ModelFetchError:
        """The DOWNLOAD_FAILED error once the retries are spent."""
        kept = self.part.size()
        hint = (
            f"the {human_size(kept)} received are kept in {self.part.path}: run again to resume"
            if kept
            else "check the network and that the URL is reachable from this machine"
        )
        return ModelFetchError(
            "DOWNLOAD_FAILED",
            f"downloading {self.model_id} from {self.resolved.url} failed after {attempts} attempts: "
            f"{_describe(error)}",
            hint,
        )

    def _attempt(self, client: httpx.Client) -> None:
        offset = self.part.size()
        headers = {"Accept-Encoding": "identity", **auth_headers(self.resolved)}
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
            raise ModelFetchError(
                "MODEL_NOT_FOUND", f"{self.model_id}: {url} was not found (HTTP 404)", not_found_hint(self.resolved)
            )
        if status in (401, 403):
            raise ModelFetchError(
                "ACCESS_DENIED",
                f"{self.model_id}: access to {url} denied (HTTP {status})",
                access_denied_hint(self.resolved),
            )
        raise ModelFetchError("DOWNLOAD_FAILED", f"{self.model_id}: {url} answered HTTP {status}", "")


# --- header parsing -------------------------------------------------------------------------------


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
