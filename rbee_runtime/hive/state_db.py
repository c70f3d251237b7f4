"""The hive's SQLite file (``catalog.db``): one connection, its lock, and recovery from corruption.

Calls come from the event loop and from the thread pool, so the one connection is guarded
by a re-entrant lock. A database that cannot be read is moved aside to
``catalog.db.corrupt-<timestamp>`` and a new, empty one is created in its place; the
``on_recreated`` hook of the owner (the model catalog) then fills it again. Two tables live
here: ``models`` (:mod:`rbee_runtime.hive.catalog`) and ``workers``
(:mod:`rbee_runtime.hive.worker_table`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("rbee.hive.catalog")

T = TypeVar("T")

#: Called with the new connection and the path the unreadable file was moved to.
RecreatedHook = Callable[[sqlite3.Connection, Path], None]

SCHEMA = """
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


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True for errors that mean the file is not a usable database (not for locks or constraints)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return "malformed" in text or "not a database" in text or "disk i/o" in text
    return True


class StateDb:
    """``catalog.db``: run statements under the lock; an unreadable file is replaced once and the call retried.

    ``on_recreated(conn, moved_to)`` fills a new database after corruption; ``recovery_note`` ends the
    error logged then (what happens to the lost content).
    """

    def __init__(self, path: Path, *, on_recreated: RecreatedHook | None = None, recovery_note: str = "") -> None:
        self.path = path
        self.on_recreated = on_recreated
        self.recovery_note = recovery_note
        #: Held for every statement; owners hold it across several (it is re-entrant).
        self.lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open()

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` under the lock; on corruption rebuild the database once and retry."""
        with self.lock:
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                self._conn.close()
                self._conn = self._recreate(exc)
                return fn(self._conn)

    def run_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run`` ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back if it raises)."""

        def atomically(c: sqlite3.Connection) -> T:
            c.execute("BEGIN IMMEDIATE")
            try:
                result = fn(c)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return result

        return self.run(atomically)

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    # ------------------------------------------------------------------ opening and recovery

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
            if not is_corruption(exc):
                raise
            if conn is not None:
                conn.close()
            return self._recreate(exc)

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)

    def _recreate(self, exc: BaseException) -> sqlite3.Connection:
        """Move the unreadable file aside, create a new database and let the owner fill it."""
        moved_to = self._move_aside(exc)
        conn = self._connect()
        self._prepare(conn)
        if self.on_recreated is not None:
            self.on_recreated(conn, moved_to)
        return conn

    def _move_aside(self, exc: BaseException) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        log.error(
            "catalog database %s is unreadable (%s); moved it to %s and started a new catalog%s",
            self.path,
            exc,
            target,
            self.recovery_note,
        )
        if self.path.exists():
            self.path.replace(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))
        return target
