"""The catalog rebuilt from the model files on disk after corruption, and its backup and restore (real SQLite)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from rbee_runtime.common.contracts import RegisterModelRequest
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import Catalog
from rbee_runtime.hive.catalog_backup import backup as backup_catalog
from rbee_runtime.hive.catalog_backup import read_backup
from rbee_runtime.hive.catalog_backup import restore as restore_catalog
from rbee_runtime.hive.worker_table import WorkerTable


def _model(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.write_bytes(b"GGUF" + name.encode() * (size // len(name)))
    return path


def _req(model_id: str, path: Path, sha256: str | None = None) -> RegisterModelRequest:
    return RegisterModelRequest(model_id=model_id, reference=f"hf:o/r/{path.name}", local_path=str(path), sha256=sha256)


def _damage(db: Path) -> None:
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    db.write_bytes(b"not a database " * 500)


def test_manifest_follows_the_models_table(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.db", rebuild_from_disk=True)
    assert json.loads(cat.manifest_path.read_text())["models"] == []
    a = _model(tmp_path, "a.gguf", 1000)
    cat.register(_req("a", a))
    rows = json.loads(cat.manifest_path.read_text())["models"]
    assert [(r["model_id"], r["size_bytes"], r["local_path"]) for r in rows] == [("a", a.stat().st_size, str(a))]
    cat.remove("a")
    assert json.loads(cat.manifest_path.read_text())["models"] == []


def test_without_rebuild_from_disk_there_is_no_manifest(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.db")
    cat.register(_req("a", _model(tmp_path, "a.gguf", 500)))
    assert not cat.manifest_path.exists()


def test_corrupt_database_is_rebuilt_from_the_files_on_disk(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    a, b, c = (_model(tmp_path, f"{n}.gguf", s) for n, s in (("a", 1000), ("b", 2000), ("c", 3000)))
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    cat = Catalog(db, rebuild_from_disk=True)
    first = cat.register(_req("a", a, digest))
    cat.register(_req("b", b))
    cat.register(_req("c", c))
    cat.close()
    c.unlink()
    b.write_bytes(b"GGUF" + b"y" * 4000)  # changed since it was registered: measured again
    _damage(db)
    config = _model(tmp_path, "cfg.gguf", 700)

    rebuilt = Catalog(db, rebuild_from_disk=True, known_models=lambda: [_req("cfg", config)])

    assert rebuilt.last_rebuild is not None
    assert rebuilt.last_rebuild.registered == ["a", "b", "cfg"] and rebuilt.last_rebuild.missing == ["c"]
    assert rebuilt.last_rebuild.moved_to.read_bytes().startswith(b"not a database")
    entries = {e.model_id: e for e in rebuilt.list_models()}
    assert sorted(entries) == ["a", "b", "cfg"]
    assert entries["a"] == first, "an unchanged file keeps its entry (sha256, added_at)"
    assert entries["b"].size_bytes == 4004
    assert entries["cfg"].size_bytes == config.stat().st_size
    assert [r["model_id"] for r in json.loads(rebuilt.manifest_path.read_text())["models"]] == ["a", "b", "cfg"]


def test_rebuild_does_not_register_a_changed_file_whose_checksum_fails(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    a = _model(tmp_path, "a.gguf", 1000)
    cat = Catalog(db, rebuild_from_disk=True)
    cat.register(_req("a", a, hashlib.sha256(a.read_bytes()).hexdigest()))
    cat.close()
    a.write_bytes(b"GGUF" + b"z" * 999)
    _damage(db)
    rebuilt = Catalog(db, rebuild_from_disk=True)
    assert rebuilt.list_models() == []
    assert rebuilt.last_rebuild is not None and rebuilt.last_rebuild.missing == ["a"]


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "data" / "catalog.db", rebuild_from_disk=True)
    a, b = _model(tmp_path, "a.gguf", 1000), _model(tmp_path, "b.gguf", 2000)
    cat.register(_req("a", a))
    cat.register(_req("b", b))
    WorkerTable(cat.db).save("w1", '{"live": true}')
    backup = tmp_path / "backups" / "catalog-backup.db"

    assert backup_catalog(cat, backup) == 2
    assert not backup.with_name(backup.name + "-wal").exists()
    before = sorted(p.name for p in backup.parent.iterdir())

    cat.remove("b")
    WorkerTable(cat.db).save("w2", '{"live": true}')
    b.unlink()
    report = restore_catalog(cat, backup, [tmp_path])

    assert report.restored == ["a", "b"] and report.missing_files == ["b"]
    assert [e.model_id for e in cat.list_models()] == ["a", "b"]
    assert {w.worker_id for w in WorkerTable(cat.db).load()} == {"w1", "w2"}, "the worker table stays the live one"
    assert sorted(p.name for p in backup.parent.iterdir()) == before, "the backup file is only read"
    assert [r["model_id"] for r in json.loads(cat.manifest_path.read_text())["models"]] == ["a", "b"]


def test_restore_refuses_damaged_backups_and_changes_nothing(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.db")
    cat.register(_req("a", _model(tmp_path, "a.gguf", 1000)))
    good = tmp_path / "good.db"
    backup_catalog(cat, good)
    raw = good.read_bytes()
    cases = {
        "garbage.db": (b"random bytes " * 1000, "not a readable SQLite database"),
        "index.db": (raw.replace(b"hf:o/r/a.gguf" + b"hf", b"hf:o/r/a.gguf" + b"zz", 1), "integrity check failed"),
    }
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE models (model_id TEXT)")
    for name, (data, _reason) in cases.items():
        (tmp_path / name).write_bytes(data)
    for path, reason in [*((tmp_path / n, r) for n, (_, r) in cases.items()), (other, "lacks the column(s)"),
                         (tmp_path / "absent.db", "does not exist")]:  # fmt: skip
        with pytest.raises(ApiError) as caught:
            restore_catalog(cat, path, [tmp_path])
        assert (caught.value.status, caught.value.code) == (400, "CATALOG_BACKUP_INVALID")
        assert reason in caught.value.message, caught.value.message
    assert [e.model_id for e in cat.list_models()] == ["a"]


def test_read_backup_of_an_older_schema_without_mtime(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE models (model_id TEXT PRIMARY KEY, reference TEXT, provider TEXT, local_path TEXT, "
            "size_bytes INTEGER, sha256 TEXT, added_at REAL)"
        )
        conn.execute("INSERT INTO models VALUES ('m', 'hf:o/r/m.gguf', 'hf', '/x/m.gguf', 5, NULL, 1.0)")
    (row,) = read_backup(path)
    assert row["model_id"] == "m" and row["mtime_ns"] == 0
