"""The SQLite model catalog (real files, real SQLite)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from rbee_runtime.common.contracts import RegisterModelRequest
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import Catalog, parse_provider
from rbee_runtime.hive.worker_table import WorkerTable


def _model(tmp_path: Path, name: str = "m.gguf", size: int = 1234) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return path


def _req(model_id: str, path: Path, reference: str | None = None, sha256: str | None = None) -> RegisterModelRequest:
    return RegisterModelRequest(
        model_id=model_id, reference=reference or f"file://{path}", local_path=str(path), sha256=sha256
    )


@pytest.mark.parametrize(
    ("reference", "provider"),
    [
        ("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama.Q4_K_M.gguf", "hf"),
        ("file:///models/m.gguf", "file"),
        ("https://example.org/m.gguf", "https"),
        ("HF:owner/repo/f.gguf", "hf"),
        ("/models/bare-path.gguf", "local"),
    ],
)
def test_parse_provider(reference: str, provider: str) -> None:
    assert parse_provider(reference) == provider


def test_register_get_list_remove(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.db")
    a = _model(tmp_path, "a.gguf", 1000)
    b = _model(tmp_path, "b.gguf", 3000)
    entry = cat.register(_req("a", a, "hf:owner/repo/a.gguf"))
    assert (entry.provider, entry.size_bytes, entry.local_path) == ("hf", 1000, str(a))
    cat.register(_req("b", b))
    assert cat.get("a") == entry
    assert cat.get("nope") is None
    assert [e.model_id for e in cat.list_models()] == ["a", "b"]
    assert [e.model_id for e in cat.list_models(provider="hf")] == ["a"]
    assert [e.model_id for e in cat.list_models(provider="file")] == ["b"]
    assert cat.list_models(provider="https") == []
    assert cat.remove("a") is True
    assert cat.remove("a") is False
    assert cat.model_ids() == ["b"]
    assert b.exists(), "removing from the catalog must not delete the file"


def test_register_is_idempotent_and_persistent(tmp_path: Path) -> None:
    path = _model(tmp_path)
    cat = Catalog(tmp_path / "catalog.db")
    first = cat.register(_req("m", path))
    time.sleep(0.01)
    assert cat.register(_req("m", path)) == first
    cat.close()
    again = Catalog(tmp_path / "catalog.db")
    assert again.get("m") == first


def test_size_is_read_from_disk_and_updated(tmp_path: Path) -> None:
    path = _model(tmp_path, size=100)
    cat = Catalog(tmp_path / "catalog.db")
    assert cat.register(_req("m", path)).size_bytes == 100
    path.write_bytes(b"y" * 5000)
    assert cat.register(_req("m", path)).size_bytes == 5000
    assert cat.require("m").size_bytes == 5000


def test_checksum_verified(tmp_path: Path) -> None:
    path = _model(tmp_path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    cat = Catalog(tmp_path / "catalog.db")
    with pytest.raises(ApiError) as err:
        cat.register(_req("m", path, sha256="0" * 64))
    assert (err.value.status, err.value.code) == (400, "CHECKSUM_MISMATCH")
    assert err.value.details["actual_sha256"] == good
    assert cat.get("m") is None, "a mismatching file must not be registered"
    assert cat.register(_req("m", path, sha256=good.upper())).sha256 == good


def test_missing_file_refused(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.db")
    for path in (tmp_path / "absent.gguf", tmp_path):
        with pytest.raises(ApiError) as err:
            cat.register(_req("m", path))
        assert (err.value.status, err.value.code) == (400, "MODEL_FILE_MISSING")
        assert str(path) in err.value.message


def test_require_unknown_is_404(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as err:
        Catalog(tmp_path / "catalog.db").require("ghost")
    assert (err.value.status, err.value.code) == (404, "MODEL_NOT_FOUND")


def test_worker_table(tmp_path: Path) -> None:
    table = WorkerTable(Catalog(tmp_path / "catalog.db").db)
    table.save("w1", '{"a": 1}')
    table.save("w2", '{"b": 2}')
    table.save("w1", '{"a": 3}')
    assert {(w.worker_id, w.record) for w in table.load()} == {("w1", '{"a": 3}'), ("w2", '{"b": 2}')}
    table.delete("w1")
    assert [w.worker_id for w in table.load()] == ["w2"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_database_is_moved_aside_and_rebuilt(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "catalog.db"
    model = _model(tmp_path)
    cat = Catalog(db)
    for i in range(200):  # a few pages, so damage lands in the middle of real data
        WorkerTable(cat.db).save(f"w{i}", "x" * 500)
    cat.register(_req("m", model))
    cat.close()
    with sqlite3.connect(db) as conn:  # fold the WAL into the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(b"this is not a database at all" * 100)
    else:
        db.write_bytes(raw[:4096] + b"\x00" * 4096 + raw[8192:])
    rebuilt = Catalog(db)
    aside = list(tmp_path.glob("catalog.db.corrupt-*"))
    assert len([p for p in aside if not p.name.endswith(("-wal", "-shm"))]) == 1
    assert rebuilt.list_models() == []
    assert WorkerTable(rebuilt.db).load() == []
    assert rebuilt.register(_req("m", model)).model_id == "m"


def test_corruption_while_running_is_recovered(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    cat = Catalog(db)
    model = _model(tmp_path)
    cat.register(_req("m", model))
    # Damage the file under the open connection (as a failing disk would).
    cat.db._conn.close()
    db.write_bytes(b"garbage" * 1000)
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    cat.db._conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    cat.db._conn.row_factory = sqlite3.Row
    assert cat.list_models() == []
    assert list(tmp_path.glob("catalog.db.corrupt-*"))
    assert cat.register(_req("m", model)).model_id == "m"
