"""The ``.part`` file of a transfer: appended to, hashed as it grows, checked for GGUF and free space, reported."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from rbee.models.cache import GGUF_MAGIC, hasher_of, remove
from rbee.models.errors import ModelFetchError
from rbee.models.progress import FetchProgress, ProgressCallback

PROGRESS_INTERVAL_S = 0.25
NOT_GGUF_HINT = (
    "rbee serves GGUF models only: point the source at a .gguf file "
    "(a file starting with '<' is usually an HTML login or error page)"
)


class PartFile:
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
        remove(self.path)
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
                    f"{self.model_id} needs {human_size(needed)} more in {self.path.parent}, "
                    f"only {human_size(available)} are free",
                    "free some space, or set deploy.model_cache to a folder on a larger disk",
                )
        if start == 0:
            self._hasher, self._hashed = hashlib.sha256(), 0
        elif self._hashed != start:  # resuming a .part of an earlier run: hash what is there first
            self._hasher, self._hashed = hasher_of(self.path), start
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
                    NOT_GGUF_HINT,
                )
        self._out.write(chunk)
        self._hasher.update(chunk)
        self._hashed += len(chunk)
        self._report()

    def digest(self) -> str:
        """sha256 of the whole ``.part`` file."""
        if self._hashed != self.size():
            self._hasher, self._hashed = hasher_of(self.path), self.size()
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


def human_size(size: int) -> str:
    """``1.5 GiB``-style size for messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
