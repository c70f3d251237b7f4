"""The hive's SQLite state: the model catalog and the table of running workers.

One connection guarded by a lock (calls come from the event loop and from the
thread pool). A database that cannot be read is moved aside to
``catalog.db.corrupt-<timestamp>`` and rebuilt empty, so the hive keeps running.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rbee_runtime.common.contracts import CatalogEntry, RegisterModelRequest
from rbee_runtime.common.errors import ApiError

log = logging.getLogger("rbee.hive.catalog")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_id   TEXT PRIMARY KEY,
    reference  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    local_path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256     TEXT,
    mtime_ns   INTEGER NOT NULL DEFAULT 0,
    added_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_provider ON models(provider);
CREATE TABLE IF NOT EXISTS workers (
    worker_id   TEXT PRIMARY KEY,
    record      TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
"""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def parse_provider(reference: str) -> str:
    """Provider of a model reference: ``hf:owner/repo/f.gguf`` → ``hf``, ``file:///a`` → ``file``.

    A reference without a scheme (a bare path) is ``local``.
    """
    match = _SCHEME.match(reference.strip())
    return match.group(1).lower() if match else "local"


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredWorker:
    """One row of the ``workers`` table: an opaque JSON record the supervisor owns."""

    worker_id: str
    record: str


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True for errors that mean the file is not a usable database (not for locks or constraints)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return "malformed" in text or "not a database" in text or "disk i/o" in text
    return True


class Catalog:
    """Model catalog plus worker table in ``<data_dir>/catalog.db``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open()

    # ------------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def _open(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            row = conn.execute("PRAGMA integrity_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity_check reported: {row[0] if row else 'nothing'}")
            self._prepare(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            if conn is not None:
                conn.close()
            self._move_aside(exc)
            conn = self._connect()
            self._prepare(conn)
            return conn

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)

    def _move_aside(self, exc: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        log.error(
            "catalog database %s is unreadable (%s); moved it to %s and started an empty catalog "
            "(re-register models with POST /v1/models or restart the hive to load them from its config)",
            self.path,
            exc,
            target,
        )
        if self.path.exists():
            self.path.replace(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` under the lock; on corruption rebuild the database once and retry."""
        with self._lock:
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._conn.close()
                self._move_aside(exc)
                self._conn = self._connect()
                self._prepare(self._conn)
                return fn(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ models

    def register(self, req: RegisterModelRequest) -> CatalogEntry:
        """Add (or update) a model whose file is on disk; size is read from disk, sha256 verified."""
        path = Path(req.local_path).expanduser()
        if not path.is_absolute():
            path = path.resolve()
        if not path.is_file():
            raise ApiError(
                400,
                "MODEL_FILE_MISSING",
                f"Model file {str(path)!r} for {req.model_id!r} does not exist on this hive (or is not a file). "
                "Copy or download the file there first, then register it again.",
                {"model_id": req.model_id, "local_path": str(path)},
            )
        stat = path.stat()
        provider = parse_provider(req.reference)
        expected = req.sha256.lower().strip() if req.sha256 else None
        existing = self._row(req.model_id)
        unchanged = (
            existing is not None
            and existing["local_path"] == str(path)
            and existing["size_bytes"] == stat.st_size
            and existing["mtime_ns"] == stat.st_mtime_ns
            and existing["reference"] == req.reference
            and (expected is None or existing["sha256"] == expected)
        )
        if unchanged and existing is not None:
            return _entry(existing)
        if expected is not None:
            actual = sha256_file(path)
            if actual != expected:
                raise ApiError(
                    400,
                    "CHECKSUM_MISMATCH",
                    f"SHA-256 of {str(path)!r} is {actual}, expected {expected}: the file is damaged or is "
                    "another file. Download it again, or correct the checksum.",
                    {"model_id": req.model_id, "expected_sha256": expected, "actual_sha256": actual},
                )
        added_at = existing["added_at"] if existing is not None else time.time()
        params = (req.model_id, req.reference, provider, str(path), stat.st_size, expected, stat.st_mtime_ns, added_at)
        self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO models "
                "(model_id, reference, provider, local_path, size_bytes, sha256, mtime_ns, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
        )
        return CatalogEntry(
            model_id=req.model_id,
            reference=req.reference,
            provider=provider,
            local_path=str(path),
            size_bytes=stat.st_size,
            sha256=expected,
            added_at=added_at,
        )

    def _row(self, model_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._run(
            lambda c: c.execute("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
        )
        return row

    def get(self, model_id: str) -> CatalogEntry | None:
        row = self._row(model_id)
        return _entry(row) if row is not None else None

    def require(self, model_id: str) -> CatalogEntry:
        """The entry, or ApiError 404 ``MODEL_NOT_FOUND``."""
        entry = self.get(model_id)
        if entry is None:
            raise ApiError(
                404,
                "MODEL_NOT_FOUND",
                f"Model {model_id!r} is not in this hive's catalog. Register it with POST /v1/models "
                "(or list it under `models` in the hive config).",
                {"model_id": model_id},
            )
        return entry

    def list_models(self, provider: str | None = None) -> list[CatalogEntry]:
        if provider is None:
            rows = self._run(lambda c: c.execute("SELECT * FROM models ORDER BY added_at, model_id").fetchall())
        else:
            rows = self._run(
                lambda c: c.execute(
                    "SELECT * FROM models WHERE provider = ? ORDER BY added_at, model_id", (provider.lower(),)
                ).fetchall()
            )
        return [_entry(r) for r in rows]

    def model_ids(self) -> list[str]:
        return [e.model_id for e in self.list_models()]

    def remove(self, model_id: str) -> bool:
        """Forget a model (the file stays on disk); False when it was not there."""
        cur = self._run(lambda c: c.execute("DELETE FROM models WHERE model_id = ?", (model_id,)))
        return cur.rowcount > 0

    # ------------------------------------------------------------------ workers

    def save_worker(self, worker_id: str, record: str) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO workers (worker_id, record, updated_at) VALUES (?, ?, ?)",
                (worker_id, record, time.time()),
            )
        )

    def delete_worker(self, worker_id: str) -> None:
        self._run(lambda c: c.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)))

    def load_workers(self) -> list[StoredWorker]:
        rows = self._run(lambda c: c.execute("SELECT worker_id, record FROM workers ORDER BY updated_at").fetchall())
        return [StoredWorker(r["worker_id"], r["record"]) for r in rows]


def _entry(row: sqlite3.Row) -> CatalogEntry:
    return CatalogEntry(
        model_id=row["model_id"],
        reference=row["reference"],
        provider=row["provider"],
        local_path=row["local_path"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        added_at=row["added_at"],
    )
