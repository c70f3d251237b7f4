"""The hive's model catalog: the GGUF files this hive can serve, in the ``models`` table of ``catalog.db``.

Registering reads a file's size from disk and verifies a given SHA-256. With
``rebuild_from_disk`` the catalog keeps a list of its model files beside the database
(``catalog.models.json``); when the database turns out unreadable (see
:mod:`rbee_runtime.hive.state_db`) the new one gets back those still on disk (sizes read
again), plus the ``known_models`` it is given (the hive's configured models); without it the
new database starts empty. The worker table (:mod:`rbee_runtime.hive.worker_table`) and
backup/restore (:mod:`rbee_runtime.hive.catalog_backup`) share the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

from rbee_runtime.common.contracts import CatalogEntry, RegisterModelRequest
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.state_db import StateDb

log = logging.getLogger("rbee.hive.catalog")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")

#: Columns a ``models`` row must have (in the manifest, in a backup to restore).
MODEL_COLUMNS = ("model_id", "reference", "provider", "local_path", "size_bytes", "sha256", "added_at")

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


def model_file_stat(path: Path, model_id: str) -> os.stat_result:
    """The ``stat`` of a model file (400 ``MODEL_FILE_MISSING`` when it is not a regular file)."""
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        raise ApiError(
            400,
            ErrorCode.MODEL_FILE_MISSING,
            f"Model file {str(path)!r} for {model_id!r} does not exist on this hive (or is not a file). "
            "Copy or download the file there first, then register it again.",
            {"model_id": model_id, "local_path": str(path)},
        )
    return stat


def verify_sha256(path: Path, expected: str, model_id: str, stat: os.stat_result) -> None:
    """400 ``CHECKSUM_MISMATCH`` unless the file hashes to ``expected`` and did not change while hashed."""
    actual = sha256_file(path)
    if actual != expected:
        raise ApiError(
            400,
            ErrorCode.CHECKSUM_MISMATCH,
            f"SHA-256 of {str(path)!r} is {actual}, expected {expected}: the file is damaged or is "
            "another file. Download it again, or correct the checksum.",
            {"model_id": model_id, "expected_sha256": expected, "actual_sha256": actual},
        )
    after = path.stat()
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (stat.st_size, stat.st_mtime_ns, stat.st_ino):
        raise ApiError(
            400,
            ErrorCode.CHECKSUM_MISMATCH,
            f"{str(path)!r} changed while its SHA-256 was computed; register {model_id!r} again once "
            "the file is complete.",
            {"model_id": model_id, "expected_sha256": expected, "actual_sha256": None},
        )


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild of a corrupt catalog found again: models re-registered, models whose file is gone."""

    moved_to: Path
    registered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class Catalog:
    """The model catalog in ``<data_dir>/catalog.db`` (its :class:`StateDb` is ``db``).

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
        note = (
            " (rebuilding it from the model files on disk)"
            if rebuild_from_disk or known_models is not None
            else " (re-register models with POST /v1/models or restart the hive to load them from its config)"
        )
        self.db = StateDb(path, on_recreated=self._rebuild, recovery_note=note)
        if self.rebuild_from_disk and not self.manifest_path.exists():
            self._write_manifest()

    @property
    def manifest_path(self) -> Path:
        """``catalog.models.json``: the model files of the catalog, for a rebuild after corruption."""
        return self.path.with_name(f"{self.path.stem}.models.json")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ rebuild after corruption

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
        wanted = (*MODEL_COLUMNS, "mtime_ns")
        return [r for r in rows if isinstance(r, dict) and all(k in r for k in wanted)]

    def _write_manifest(self, conn: sqlite3.Connection | None = None) -> None:
        """Write the model rows to ``catalog.models.json`` (atomically); a failure is logged, not raised."""
        if not self.rebuild_from_disk:
            return
        query = "SELECT * FROM models ORDER BY model_id"
        if conn is not None:  # the new database of a rebuild (under the lock; ``self.db`` may not be set yet)
            rows = [dict(r) for r in conn.execute(query).fetchall()]
        else:
            rows = self.db.run(lambda c: [dict(r) for r in c.execute(query).fetchall()])
        tmp = self.manifest_path.with_name(self.manifest_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "models": rows}, indent=1) + "\n", encoding="utf-8")
            tmp.replace(self.manifest_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.manifest_path, exc)

    # ------------------------------------------------------------------ models

    def register(self, req: RegisterModelRequest) -> CatalogEntry:
        """Add (or update) a model whose file is on disk; size is read from disk, sha256 verified.

        The file is hashed without holding the database lock (the event loop needs it for heartbeats
        and spawns), so call this from a thread; only the row is written under the lock.
        """
        row, changed = self._prepare(req, self._row(req.model_id))
        if changed:
            with self.db.lock:
                self.db.run(lambda c: self._insert(c, row))
                self._write_manifest()
        return _entry_of(row)

    def _register_on(self, conn: sqlite3.Connection, req: RegisterModelRequest) -> CatalogEntry:
        """``register`` into a given connection (the rebuild's), without corruption handling."""
        existing = conn.execute("SELECT * FROM models WHERE model_id = ?", (req.model_id,)).fetchone()
        row, changed = self._prepare(req, existing)
        if changed:
            self._insert(conn, row)
        return _entry_of(row)

    @staticmethod
    def _prepare(req: RegisterModelRequest, existing: sqlite3.Row | None) -> tuple[dict[str, Any], bool]:
        """The row of ``req`` (size read from disk, a given sha256 verified); whether it differs from ``existing``."""
        path = Path(req.local_path).expanduser()
        if not path.is_absolute():
            path = path.resolve()
        stat = model_file_stat(path, req.model_id)
        expected = req.sha256.lower().strip() if req.sha256 else None
        unchanged = (
            existing is not None
            and existing["local_path"] == str(path)
            and existing["size_bytes"] == stat.st_size
            and existing["mtime_ns"] == stat.st_mtime_ns
            and existing["reference"] == req.reference
            and (expected is None or existing["sha256"] == expected)
        )
        if unchanged and existing is not None:
            return dict(existing), False
        if expected is not None:
            verify_sha256(path, expected, req.model_id, stat)
        return {
            "model_id": req.model_id,
            "reference": req.reference,
            "provider": parse_provider(req.reference),
            "local_path": str(path),
            "size_bytes": stat.st_size,
            "sha256": expected,
            "mtime_ns": stat.st_mtime_ns,
            "added_at": existing["added_at"] if existing is not None else time.time(),
        }, True

    def _row(self, model_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.run(
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
            rows = self.db.run(lambda c: c.execute("SELECT * FROM models ORDER BY added_at, model_id").fetchall())
        else:
            rows = self.db.run(
                lambda c: c.execute(
                    "SELECT * FROM models WHERE provider = ? ORDER BY added_at, model_id", (provider.lower(),)
                ).fetchall()
            )
        return [_entry(r) for r in rows]

    def model_ids(self) -> list[str]:
        return [e.model_id for e in self.list_models()]

    def remove(self, model_id: str) -> bool:
        """Forget a model (the file stays on disk); False when it was not there."""
        with self.db.lock:
            cur = self.db.run(lambda c: c.execute("DELETE FROM models WHERE model_id = ?", (model_id,)))
            if cur.rowcount > 0:
                self._write_manifest()
                return True
            return False

    def replace_models(self, rows: list[dict[str, Any]]) -> None:
        """Put ``rows`` (``models`` rows, e.g. of a backup) in place of all models, in one transaction."""
        with self.db.lock:

            def replace(c: sqlite3.Connection) -> None:
                c.execute("DELETE FROM models")
                for row in rows:
                    self._insert(c, row)

            self.db.run_in_transaction(replace)
            self._write_manifest()


def _entry(row: sqlite3.Row) -> CatalogEntry:
    return _entry_of(dict(row))


def _entry_of(row: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        model_id=row["model_id"],
        reference=row["reference"],
        provider=row["provider"],
        local_path=row["local_path"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        added_at=row["added_at"],
    )
