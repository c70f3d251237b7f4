"""The hive's SQLite state: the model catalog and the table of running workers.

One connection guarded by a lock (calls come from the event loop and from the
thread pool). A database that cannot be read is moved aside to
``catalog.db.corrupt-<timestamp>`` and rebuilt, so the hive keeps running: with
``rebuild_from_disk`` the catalog keeps a list of its model files beside the database
(``catalog.models.json``) and re-registers those still on disk (sizes read again), plus
the ``known_models`` it is given (the hive's configured models); without it the new
database starts empty.

``backup(dest)`` writes a consistent copy with SQLite's online backup API;
``restore(src)`` checks a backup (integrity and schema) before its models replace the
catalog's (the worker table stays the live one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rbee_runtime.common.contracts import CatalogEntry, RegisterModelRequest
from rbee_runtime.common.error_codes import ErrorCode
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

#: Columns a backup's ``models`` table must have to be restored.
_MODEL_COLUMNS = ("model_id", "reference", "provider", "local_path", "size_bytes", "sha256", "added_at")

KnownModels = Callable[[], Iterable[RegisterModelRequest]]


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


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild of a corrupt catalog found again: models re-registered, models whose file is gone."""

    moved_to: Path
    registered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreReport:
    """Result of :meth:`Catalog.restore`: the models now in the catalog, and those whose file is not on disk."""

    restored: list[str]
    missing_files: list[str]


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True for errors that mean the file is not a usable database (not for locks or constraints)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return "malformed" in text or "not a database" in text or "disk i/o" in text
    return True


class Catalog:
    """Model catalog plus worker table in ``<data_dir>/catalog.db``.

    ``rebuild_from_disk``: keep ``<data_dir>/catalog.models.json`` (the model files the catalog
    holds) so a corrupt database is rebuilt with the models whose files are still there;
    ``known_models``: more models to re-register on a rebuild (e.g. those of the hive config).
    """

    def __init__(self, path: Path, *, rebuild_from_disk: bool = False, known_models: KnownModels | None = None) -> None:
        self.path = path
        self.rebuild_from_disk = rebuild_from_disk
        self.known_models = known_models
        #: The last rebuild of a corrupt database (None: none happened since this object was made).
        self.last_rebuild: RebuildReport | None = None
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open()
        if self.rebuild_from_disk and not self.manifest_path.exists():
            self._write_manifest()

    @property
    def manifest_path(self) -> Path:
        """``catalog.models.json``: the model files of the catalog, for a rebuild after corruption."""
        return self.path.with_name(f"{self.path.stem}.models.json")

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
            moved_to = self._move_aside(exc)
            conn = self._connect()
            self._prepare(conn)
            self._rebuild(conn, moved_to)
            return conn

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)

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
            " (rebuilding it from the model files on disk)"
            if self.rebuild_from_disk or self.known_models is not None
            else " (re-register models with POST /v1/models or restart the hive to load them from its config)",
        )
        if self.path.exists():
            self.path.replace(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))
        return target

    def _rebuild(self, conn: sqlite3.Connection, moved_to: Path) -> None:
        """Re-register into the new database ``conn`` the models of the manifest and ``known_models``.

        A manifest entry whose file has the recorded size and mtime keeps its recorded sha256 (no
        re-hashing); any other is registered anew (size read from disk, a given sha256 verified).
        Files no longer on disk are reported as missing.
        """
        recorded = self._read_manifest() if self.rebuild_from_disk else []
        sources: dict[str, tuple[RegisterModelRequest, dict[str, Any] | None]] = {}
        for rec in recorded:
            req = RegisterModelRequest(
                model_id=rec["model_id"], reference=rec["reference"], local_path=rec["local_path"], sha256=rec["sha256"]
            )
            sources[req.model_id] = (req, rec)
        if self.known_models is not None:
            try:
                for req in self.known_models():
                    sources[req.model_id] = (req, None)
            except Exception:
                log.exception("listing the known models for the catalog rebuild failed")
        report = RebuildReport(moved_to=moved_to)
        for model_id, (req, row) in sorted(sources.items()):
            path = Path(req.local_path)
            try:
                stat = path.stat()
            except OSError:
                report.missing.append(model_id)
                continue
            try:
                if row is not None and row["size_bytes"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns:
                    self._insert(conn, row)
                else:
                    self._register_on(conn, req)
            except ApiError as exc:
                log.error("catalog rebuild: model %s not re-registered: %s", model_id, exc.message)
                report.missing.append(model_id)
                continue
            report.registered.append(model_id)
        self.last_rebuild = report
        if sources:
            log.warning(
                "catalog rebuilt from the files on disk: %d model(s) re-registered (%s)%s",
                len(report.registered),
                ", ".join(report.registered) or "none",
                f"; not found on disk: {', '.join(report.missing)}" if report.missing else "",
            )
        if self.rebuild_from_disk:
            self._write_manifest(conn)

    @staticmethod
    def _insert(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO models "
            "(model_id, reference, provider, local_path, size_bytes, sha256, mtime_ns, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["model_id"],
                row["reference"],
                row["provider"],
                row["local_path"],
                row["size_bytes"],
                row["sha256"],
                row["mtime_ns"],
                row["added_at"],
            ),
        )

    # ------------------------------------------------------------------ manifest (files the catalog knows)

    def _read_manifest(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s): the rebuild uses the known models only", self.manifest_path, exc)
            return []
        rows = data.get("models") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            return []
        wanted = (*_MODEL_COLUMNS, "mtime_ns")
        return [r for r in rows if isinstance(r, dict) and all(k in r for k in wanted)]

    def _write_manifest(self, conn: sqlite3.Connection | None = None) -> None:
        """Write the model rows to ``catalog.models.json`` (atomically); a failure is logged, not raised."""
        if not self.rebuild_from_disk:
            return
        with self._lock:
            source = conn if conn is not None else self._conn
            rows = [dict(r) for r in source.execute("SELECT * FROM models ORDER BY model_id").fetchall()]
        tmp = self.manifest_path.with_name(self.manifest_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "models": rows}, indent=1) + "\n", encoding="utf-8")
            tmp.replace(self.manifest_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.manifest_path, exc)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` under the lock; on corruption rebuild the database once and retry."""
        with self._lock:
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._conn.close()
                moved_to = self._move_aside(exc)
                self._conn = self._connect()
                self._prepare(self._conn)
                self._rebuild(self._conn, moved_to)
                return fn(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ models

    def register(self, req: RegisterModelRequest) -> CatalogEntry:
        """Add (or update) a model whose file is on disk; size is read from disk, sha256 verified."""
        with self._lock:
            entry, changed = self._register(req, None)
            if changed:
                self._write_manifest()
            return entry

    def _register_on(self, conn: sqlite3.Connection, req: RegisterModelRequest) -> CatalogEntry:
        """``register`` into a given connection (the rebuild's), without corruption handling."""
        return self._register(req, conn)[0]

    def _register(self, req: RegisterModelRequest, conn: sqlite3.Connection | None) -> tuple[CatalogEntry, bool]:
        """Register ``req``; (the entry, whether the row changed). ``conn`` None: the catalog's own connection."""
        path = Path(req.local_path).expanduser()
        if not path.is_absolute():
            path = path.resolve()
        if not path.is_file():
            raise ApiError(
                400,
                ErrorCode.MODEL_FILE_MISSING,
                f"Model file {str(path)!r} for {req.model_id!r} does not exist on this hive (or is not a file). "
                "Copy or download the file there first, then register it again.",
                {"model_id": req.model_id, "local_path": str(path)},
            )
        stat = path.stat()
        provider = parse_provider(req.reference)
        expected = req.sha256.lower().strip() if req.sha256 else None
        existing = (
            self._row(req.model_id)
            if conn is None
            else conn.execute("SELECT * FROM models WHERE model_id = ?", (req.model_id,)).fetchone()
        )
        unchanged = (
            existing is not None
            and existing["local_path"] == str(path)
            and existing["size_bytes"] == stat.st_size
            and existing["mtime_ns"] == stat.st_mtime_ns
            and existing["reference"] == req.reference
            and (expected is None or existing["sha256"] == expected)
        )
        if unchanged and existing is not None:
            return _entry(existing), False
        if expected is not None:
            actual = sha256_file(path)
            if actual != expected:
                raise ApiError(
                    400,
                    ErrorCode.CHECKSUM_MISMATCH,
                    f"SHA-256 of {str(path)!r} is {actual}, expected {expected}: the file is damaged or is "
                    "another file. Download it again, or correct the checksum.",
                    {"model_id": req.model_id, "expected_sha256": expected, "actual_sha256": actual},
                )
        added_at = existing["added_at"] if existing is not None else time.time()
        row = {
            "model_id": req.model_id,
            "reference": req.reference,
            "provider": provider,
            "local_path": str(path),
            "size_bytes": stat.st_size,
            "sha256": expected,
            "mtime_ns": stat.st_mtime_ns,
            "added_at": added_at,
        }
        if conn is None:
            self._run(lambda c: self._insert(c, row))
        else:
            self._insert(conn, row)
        entry = CatalogEntry(
            model_id=req.model_id,
            reference=req.reference,
            provider=provider,
            local_path=str(path),
            size_bytes=stat.st_size,
            sha256=expected,
            added_at=added_at,
        )
        return entry, True

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
                ErrorCode.MODEL_NOT_FOUND,
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
        with self._lock:
            cur = self._run(lambda c: c.execute("DELETE FROM models WHERE model_id = ?", (model_id,)))
            if cur.rowcount > 0:
                self._write_manifest()
                return True
            return False

    # ------------------------------------------------------------------ backup and restore

    def backup(self, dest: Path) -> int:
        """Write a consistent copy of the database to ``dest`` (SQLite online backup); its number of models.

        ``dest`` appears atomically and is a standalone file (rollback journal, no ``-wal`` beside it).
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            target = sqlite3.connect(tmp)
            try:
                self._run(lambda c: c.backup(target))
                target.execute("PRAGMA journal_mode=DELETE")
                count = int(target.execute("SELECT COUNT(*) FROM models").fetchone()[0])
            finally:
                target.close()
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("catalog backed up to %s (%d model(s))", dest, count)
        return count

    def restore(self, src: Path) -> RestoreReport:
        """Replace the catalog's models with those of the backup ``src`` (the file is only read).

        The backup must pass SQLite's integrity check and hold a ``models`` table; otherwise ApiError
        400 ``CATALOG_BACKUP_INVALID`` and the catalog is unchanged. The worker table is not touched.
        Restored models whose file is not on this machine are listed in ``missing_files``.
        """
        rows = read_backup(Path(src))
        with self._lock:

            def replace(c: sqlite3.Connection) -> None:
                c.execute("BEGIN IMMEDIATE")
                try:
                    c.execute("DELETE FROM models")
                    for row in rows:
                        self._insert(c, row)
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
                c.execute("COMMIT")

            self._run(replace)
            self._write_manifest()
        missing = [r["model_id"] for r in rows if not Path(r["local_path"]).is_file()]
        restored = [r["model_id"] for r in rows]
        log.warning(
            "catalog restored from %s: %d model(s)%s",
            src,
            len(restored),
            f"; files not on this machine: {', '.join(missing)}" if missing else "",
        )
        return RestoreReport(restored=restored, missing_files=missing)

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


def _invalid_backup(src: Path, why: str) -> ApiError:
    return ApiError(
        400,
        ErrorCode.CATALOG_BACKUP_INVALID,
        f"{src.name} is not a usable catalog backup: {why}. The catalog was not changed; restore another "
        "backup (GET /v1/catalog/backup makes one).",
        {"reason": why},
    )


def read_backup(src: Path) -> list[dict[str, Any]]:
    """The model rows of a catalog backup, after an integrity and schema check (ApiError 400 otherwise).

    The file is opened immutable: nothing is written beside it.
    """
    if not src.is_file():
        raise _invalid_backup(src, "the file does not exist")
    try:
        conn = sqlite3.connect(f"{src.resolve().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise _invalid_backup(src, f"it cannot be opened ({exc})") from exc
    try:
        conn.row_factory = sqlite3.Row
        check = conn.execute("PRAGMA integrity_check").fetchall()
        if [tuple(r) for r in check] != [("ok",)]:
            raise _invalid_backup(src, f"the integrity check failed ({'; '.join(str(r[0]) for r in check[:3])})")
        columns = {r["name"] for r in conn.execute("PRAGMA table_info(models)").fetchall()}
        if not columns:
            raise _invalid_backup(src, "it has no models table")
        lacking = [c for c in _MODEL_COLUMNS if c not in columns]
        if lacking:
            raise _invalid_backup(src, f"its models table lacks the column(s) {', '.join(lacking)}")
        mtime = "mtime_ns" if "mtime_ns" in columns else "0 AS mtime_ns"
        rows = conn.execute(f"SELECT {', '.join(_MODEL_COLUMNS)}, {mtime} FROM models ORDER BY model_id").fetchall()
        return [dict(r) for r in rows]
    except sqlite3.DatabaseError as exc:
        raise _invalid_backup(src, f"it is not a readable SQLite database ({exc})") from exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


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
