"""Backup and restore of the model catalog.

:func:`backup` writes a consistent copy of ``catalog.db`` with SQLite's online backup API;
:func:`restore` checks a backup (schema objects, integrity, rows: :func:`read_backup`) and each of
its entries (inside the models folders, sha256 recomputed) before they replace the catalog's models
(the worker table stays the live one).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import MODEL_COLUMNS, Catalog, model_file_stat, verify_sha256
from rbee_runtime.hive.model_paths import confine

log = logging.getLogger("rbee.hive.catalog")


@dataclass(frozen=True)
class RefusedEntry:
    """A model of a backup that was not restored, and why (``code``: an :class:`ErrorCode`)."""

    model_id: str
    code: str
    reason: str


@dataclass(frozen=True)
class RestoreReport:
    """Result of :func:`restore`: the models now in the catalog, those whose file is not on disk, those refused."""

    restored: list[str]
    missing_files: list[str]
    refused: list[RefusedEntry] = field(default_factory=list)


def backup(catalog: Catalog, dest: Path) -> int:
    """Write a consistent copy of the catalog's database to ``dest`` (SQLite online backup); its number of models.

    ``dest`` appears atomically and is a standalone file (rollback journal, no ``-wal`` beside it).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        target = sqlite3.connect(tmp)
        try:
            catalog.db.run(lambda c: c.backup(target))
            target.execute("PRAGMA journal_mode=DELETE")
            count = int(target.execute("SELECT COUNT(*) FROM models").fetchone()[0])
        finally:
            target.close()
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("catalog backed up to %s (%d model(s))", dest, count)
    return count


def restore(catalog: Catalog, src: Path, roots: Sequence[Path]) -> RestoreReport:
    """Replace the catalog's models with those of the backup ``src`` (the file is only read); call it from a thread.

    The backup must hold only the catalog's own schema (no views, triggers or other objects), pass
    SQLite's integrity check and hold well-formed ``models`` rows; otherwise ApiError 400
    ``CATALOG_BACKUP_INVALID`` and the catalog is unchanged. Each entry must lie in one of the
    models folders ``roots`` (else refused unread, ``MODEL_PATH_NOT_ALLOWED``); an entry whose file
    is there is checked again (size from disk, its sha256 recomputed: a mismatch is refused,
    ``CHECKSUM_MISMATCH``). The accepted entries replace the catalog's in one transaction; the
    hashing runs before, without the database lock. The worker table is not touched.
    """
    rows = read_backup(Path(src))
    accepted: list[dict[str, Any]] = []
    refused: list[RefusedEntry] = []
    missing: list[str] = []
    for row in rows:
        try:
            checked = _check_entry(row, roots)
        except ApiError as exc:
            refused.append(RefusedEntry(row["model_id"], exc.code, exc.message))
            continue
        if checked is None:
            missing.append(row["model_id"])
            checked = row
        accepted.append(checked)
    catalog.replace_models(accepted)
    restored = [r["model_id"] for r in accepted]
    log.warning(
        "catalog restored from %s: %d model(s)%s%s",
        src,
        len(restored),
        f"; files not on this machine: {', '.join(missing)}" if missing else "",
        f"; refused: {'; '.join(f'{r.model_id} ({r.code})' for r in refused)}" if refused else "",
    )
    return RestoreReport(restored=restored, missing_files=missing, refused=refused)


def _check_entry(row: dict[str, Any], roots: Sequence[Path]) -> dict[str, Any] | None:
    """The row with size and mtime read from disk (None: its file is not there); ApiError when refused."""
    model_id, local_path = row["model_id"], row["local_path"]
    confine(model_id, local_path, roots)
    path = Path(local_path)
    try:
        stat = model_file_stat(path, model_id)
    except ApiError:
        return None
    if row["sha256"] is not None:
        verify_sha256(path, row["sha256"], model_id, stat)
    return {**row, "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _invalid_backup(src: Path, why: str) -> ApiError:
    return ApiError(
        400,
        ErrorCode.CATALOG_BACKUP_INVALID,
        f"{src.name} is not a usable catalog backup: {why}. The catalog was not changed; restore another "
        "backup (GET /v1/catalog/backup makes one).",
        {"reason": why},
    )


#: The schema objects a catalog backup may hold: (type, name) -> the table they belong to.
_EXPECTED_OBJECTS = {
    ("table", "models"): "models",
    ("table", "workers"): "workers",
    ("index", "models_by_provider"): "models",
    ("index", "sqlite_autoindex_models_1"): "models",
    ("index", "sqlite_autoindex_workers_1"): "workers",
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_schema(src: Path, conn: sqlite3.Connection) -> None:
    """Refuse a backup without a ``models`` table, or with any other object (views, triggers, tables)."""
    objects = [(r[0], r[1], r[2]) for r in conn.execute("SELECT type, name, tbl_name FROM sqlite_master")]
    if ("table", "models", "models") not in objects:
        raise _invalid_backup(src, "it has no models table")
    unexpected = [f"{kind} {name!r}" for kind, name, table in objects if _EXPECTED_OBJECTS.get((kind, name)) != table]
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        raise _invalid_backup(src, f"it holds schema objects a catalog never has ({shown})")


def _check_row(src: Path, row: dict[str, Any]) -> dict[str, Any]:
    """A ``models`` row with the types the catalog writes (400 otherwise), sha256 lower-cased."""
    texts = ("model_id", "reference", "provider", "local_path")
    bad = [c for c in texts if not isinstance(row[c], str) or not row[c] or "\x00" in row[c]]
    if not isinstance(row["size_bytes"], int) or row["size_bytes"] < 0:
        bad.append("size_bytes")
    if not isinstance(row["mtime_ns"], int):
        bad.append("mtime_ns")
    if not isinstance(row["added_at"], int | float) or not math.isfinite(row["added_at"]):
        bad.append("added_at")
    sha = row["sha256"]
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha.lower())):
        bad.append("sha256")
    if bad:
        raise _invalid_backup(src, f"the row of model {str(row['model_id'])[:80]!r} has invalid {', '.join(bad)}")
    return {**row, "sha256": sha.lower() if sha is not None else None}


def read_backup(src: Path) -> list[dict[str, Any]]:
    """The model rows of a catalog backup, after a schema, integrity and row check (ApiError 400 otherwise).

    The file is opened immutable and read-only, with ``trusted_schema`` off: nothing is written
    beside it and no view or trigger of it ever runs (they are refused before any table is read).
    """
    if not src.is_file():
        raise _invalid_backup(src, "the file does not exist")
    try:
        conn = sqlite3.connect(f"{src.resolve().as_uri()}?immutable=1&mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _invalid_backup(src, f"it cannot be opened ({exc})") from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA trusted_schema=OFF")
        _check_schema(src, conn)
        check = conn.execute("PRAGMA integrity_check").fetchall()
        if [tuple(r) for r in check] != [("ok",)]:
            raise _invalid_backup(src, f"the integrity check failed ({'; '.join(str(r[0]) for r in check[:3])})")
        columns = {r["name"] for r in conn.execute("PRAGMA table_info(models)").fetchall()}
        lacking = [c for c in MODEL_COLUMNS if c not in columns]
        if lacking:
            raise _invalid_backup(src, f"its models table lacks the column(s) {', '.join(lacking)}")
        mtime = "mtime_ns" if "mtime_ns" in columns else "0 AS mtime_ns"
        rows = conn.execute(f"SELECT {', '.join(MODEL_COLUMNS)}, {mtime} FROM models ORDER BY model_id").fetchall()
        return [_check_row(src, dict(r)) for r in rows]
    except sqlite3.DatabaseError as exc:
        raise _invalid_backup(src, f"it is not a readable SQLite database ({exc})") from exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
