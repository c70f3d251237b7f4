"""The one error a model fetch raises: a stable code, a message naming the file or URL, and a hint."""

from __future__ import annotations

from typing import Literal

FetchErrorCode = Literal[
    "DOWNLOAD_FAILED",  # network errors / 5xx / stalls outlasted the retries (the .part is kept)
    "MODEL_NOT_FOUND",  # 404, or a file:// path that does not exist
    "ACCESS_DENIED",  # 401/403, or a file:// path that cannot be read
    "CHECKSUM_MISMATCH",  # the complete file's sha256 is not the spec's (the file is deleted)
    "INSUFFICIENT_DISK",  # the cache folder has less free space than the rest of the file needs
    "NOT_GGUF",  # the file does not start with the GGUF magic (the file is deleted)
    "UNSUPPORTED_SOURCE",  # a source rbee cannot fetch (e.g. plain http to another machine)
    "CACHE_ERROR",  # the cache folder cannot be used (permissions, I/O error)
]


class ModelFetchError(Exception):
    """A model could not be fetched into the cache; ``code`` is stable, ``message`` and ``hint`` are for people."""

    def __init__(self, code: FetchErrorCode, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code: FetchErrorCode = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ModelFetchError(code={self.code!r}, message={self.message!r}, hint={self.hint!r})"
