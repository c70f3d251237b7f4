"""Backup and restore of the model catalog.

:func:`backup` writes a consistent copy of ``catalog.db`` with SQLite's online backup API;
:func:`restore` checks a backup (integrity and schema, :func:`read_backup`) before its models
replace the catalog's (the worker table stays the live one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import MODEL_COLUMNS, Catalog

log = logging.getLogger("rbee.hive.catalog")


@dataclass(frozen=True)
class RestoreReport:
    """Result of :func:`restore`: the models now in the catalog, and those whose file is not on disk."""

    restored: list[str]
    missing_files: list[str]


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


def restore(catalog: Catalog, src: Path) -> RestoreReport:
    """Replace the catalog's models with those of the backup ``src`` (the file is only read).

    The backup must pass SQLite's integrity check and hold a ``models`` table; otherwise ApiError
    400 ``CATALOG_BACKUP_INVALID`` and the catalog is unchanged. The worker table is not touched.
    Restored models whose file is not on this machine are listed in ``missing_files``.
    """
    rows = read_backup(Path(src))
    catalog.replace_models(rows)
    missing = [r["model_id"] for r in rows if not Path(r["local_path"]).is_file()]
    restored = [r["model_id"] for r in rows]
    log.warning(
        "catalog restored from %s: %d model(s)%s",
        src,
        len(restored),
        f"; files not on this machine: {', '.join(missing)}" if missing else "",
    )
    return RestoreReport(restored=restored, missing_files=missing)


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
        lacking = [c for c in MODEL_COLUMNS if c not in columns]
        if lacking:
            raise _invalid_backup(src, f"its models table lacks the column(s) {', '.join(lacking)}")
        mtime = "mtime_ns" if "mtime_ns" in columns else "0 AS mtime_ns"
        rows = conn.execute(f"SELECT {', '.join(MODEL_COLUMNS)}, {mtime} FROM models ORDER BY model_id").fetchall()
        return [dict(r) for r in rows]
    except sqlite3.DatabaseError as exc:
        raise _invalid_backup(src, f"it is not a readable SQLite database ({exc})") from exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
