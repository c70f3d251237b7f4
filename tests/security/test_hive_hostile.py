"""Hostile calls to a real hive: paths outside its models folders, crafted catalog backups, hashing that
could freeze it, and spawns asking for more context than the model or the machine can hold."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import httpx
import numpy as np
import pytest

from rbee_runtime.hive.model_limits import model_limits
from tests.support.services import HiveProc, Hives
from tests.support.stubs import QueenStub

#: Seconds the hashing of the big model file should take at least (the file is sized to this machine).
HASH_SECONDS = 3.0


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()["error"]
    assert body["code"] == code, body
    return body


def _models_dir(config: dict[str, Any]) -> Path:
    folder = Path(config["data_dir"]) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_model(path: Path, size: int, seed: int = 1) -> str:
    data = b"GGUF" + random.Random(seed).randbytes(size - 4)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A GGUF-looking file whose SHA-256 takes about HASH_SECONDS here (real bytes, written once), and its digest."""
    block = b"GGUF" + random.Random(5).randbytes((8 << 20) - 4)
    started = time.monotonic()
    for _ in range(8):
        hashlib.sha256(block).digest()
    per_second = 8 * len(block) / max(time.monotonic() - started, 1e-3)
    blocks = max(8, min(1024, int(per_second * HASH_SECONDS) // len(block)))  # 64 MiB .. 8 GiB
    path = tmp_path_factory.mktemp("big") / "big.gguf"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(blocks):
            out.write(block)
            digest.update(block)
    return path, digest.hexdigest()


@pytest.fixture
def hive(hives: Hives) -> HiveProc:
    """A hive with one configured model in a folder of its own (so that folder is a models folder too)."""
    config = hives.config("hostile")
    configured = hives.workdir / "configured"
    configured.mkdir()
    boot = configured / "boot.gguf"
    _write_model(boot, 3000)
    config["models"] = [{"model_id": "boot", "reference": f"file:{boot}", "local_path": str(boot)}]
    _models_dir(config)
    return hives.start(config)


# --------------------------------------------------------------------------- register: no oracle


def test_register_refuses_paths_outside_the_models_folders_without_reading_them(
    hive: HiveProc, big_model: tuple[Path, str]
) -> None:
    outside, digest = big_model  # the right checksum: hashing the file would make it pass
    models = hive.data_dir / "models"
    (models / "escape.gguf").symlink_to(outside)
    attempts = {
        "existing": str(outside),
        "missing": str(outside.with_name("nothing-here.gguf")),
        "traversal": f"{models}/{os.path.relpath(outside, models)}",
        "symlink": str(models / "escape.gguf"),
        "relative": "big.gguf",
    }
    bodies: dict[str, dict[str, Any]] = {}
    for name, local_path in attempts.items():
        started = time.monotonic()
        resp = hive.http.post(
            "/v1/models", json={"model_id": name, "reference": "file:x", "local_path": local_path, "sha256": digest}
        )
        elapsed = time.monotonic() - started
        bodies[name] = _error(resp, 400, "MODEL_PATH_NOT_ALLOWED")
        assert bodies[name]["details"]["field"] == "local_path"
        assert elapsed < HASH_SECONDS / 3, f"{name}: {elapsed:.2f} s — the file outside was read"
    # An existing and a missing file outside get the same answer: no existence oracle.
    same = {k: v for k, v in bodies["existing"].items() if k not in ("message", "details")}
    assert same == {k: v for k, v in bodies["missing"].items() if k not in ("message", "details")}
    assert bodies["existing"]["message"].replace(str(outside), "P").replace("'existing'", "'X'") == bodies["missing"][
        "message"
    ].replace(str(outside.with_name("nothing-here.gguf")), "P").replace("'missing'", "'X'")
    assert "symbolic link" in bodies["symlink"]["message"]
    assert [m["model_id"] for m in hive.get("/v1/models")["models"]] == ["boot"]
    # Inside a models folder (also the configured model's own folder) registration works as before.
    inside = Path(hive.config["models"][0]["local_path"]).with_name("second.gguf")
    sha = _write_model(inside, 4000, seed=2)
    ok = hive.http.post(
        "/v1/models", json={"model_id": "second", "reference": "file:x", "local_path": str(inside), "sha256": sha}
    )
    assert ok.status_code == 201, ok.text


# --------------------------------------------------------------------------- hashing never freezes the hive


def test_hashing_a_big_model_does_not_freeze_the_hive(
    hives: Hives, queen_stub: QueenStub, big_model: tuple[Path, str]
) -> None:
    source, digest = big_model
    config = hives.config("hashing", queen_url=queen_stub.url, heartbeat_interval_s=0.2)
    target = _models_dir(config) / "big.gguf"
    os.link(source, target)  # same bytes, no copy
    hive = hives.start(config)
    result: dict[str, Any] = {}

    def register() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=hive.url, timeout=120, trust_env=False) as http:
            body = {"model_id": "big", "reference": "file:big", "local_path": str(target), "sha256": digest}
            result["resp"] = http.post("/v1/models", json=body)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=register)
    beats_before = len(queen_stub.snapshot())
    thread.start()
    health: list[float] = []
    listing: list[float] = []
    try:
        while thread.is_alive():
            for path, seen in (("/health", health), ("/v1/models", listing)):
                started = time.monotonic()
                assert hive.http.get(path, timeout=10).status_code == 200
                seen.append(time.monotonic() - started)
            time.sleep(0.05)
    finally:
        thread.join(timeout=120)
    assert result["resp"].status_code == 201, result["resp"].text
    assert result["seconds"] > 1.0, f"hashing took {result['seconds']:.2f} s: too fast to show anything"
    assert max(health) < 0.5, f"/health answered in up to {max(health):.2f} s while a model was hashed"
    assert max(listing) < 0.5, f"GET /v1/models took up to {max(listing):.2f} s: the catalog lock was held"
    assert len(health) >= 5
    beats = len(queen_stub.snapshot()) - beats_before
    assert beats >= result["seconds"] / 0.2 / 3, f"only {beats} heartbeats in {result['seconds']:.1f} s"


# --------------------------------------------------------------------------- restore of crafted backups


def _backup(hive: HiveProc, tmp_path: Path, name: str) -> Path:
    resp = hive.http.get("/v1/catalog/backup")
    assert resp.status_code == 200, resp.text
    path = tmp_path / name
    path.write_bytes(resp.content)
    return path


def _restore(hive: HiveProc, path: Path) -> httpx.Response:
    return hive.http.post("/v1/catalog/restore", content=path.read_bytes())


@pytest.mark.parametrize(
    "statement, shown",
    [
        ("CREATE VIEW models_view AS SELECT * FROM models", "view 'models_view'"),
        ("CREATE TRIGGER t AFTER INSERT ON models BEGIN DELETE FROM models; END", "trigger 't'"),
        ("CREATE TABLE extra (x TEXT)", "table 'extra'"),
        ("CREATE INDEX odd ON models(local_path)", "index 'odd'"),
    ],
)
def test_restore_refuses_backups_with_foreign_schema_objects(
    hive: HiveProc, tmp_path: Path, statement: str, shown: str
) -> None:
    path = _backup(hive, tmp_path, "crafted.db")
    with sqlite3.connect(path) as conn:
        conn.execute(statement)
        conn.execute("DELETE FROM models")
    conn.close()
    err = _error(_restore(hive, path), 400, "CATALOG_BACKUP_INVALID")
    assert shown in err["message"] and "was not changed" in err["message"], err["message"]
    assert [m["model_id"] for m in hive.get("/v1/models")["models"]] == ["boot"]


def test_restore_checks_every_entry_and_reports_the_refused(
    hive: HiveProc, tmp_path: Path, big_model: tuple[Path, str]
) -> None:
    models = hive.data_dir / "models"
    good, damaged = models / "good.gguf", models / "damaged.gguf"
    good_sha = _write_model(good, 5000, seed=3)
    damaged_sha = _write_model(damaged, 5000, seed=4)
    for model_id, path, sha in (("good", good, good_sha), ("damaged", damaged, damaged_sha)):
        body = {"model_id": model_id, "reference": f"file:{path}", "local_path": str(path), "sha256": sha}
        assert hive.http.post("/v1/models", json=body).status_code == 201
    backup = _backup(hive, tmp_path, "backup.db")
    outside, outside_sha = big_model
    with sqlite3.connect(backup) as conn:  # a backup naming files outside, and one for a file that went away
        row = "INSERT INTO models VALUES (?, 'file:x', 'file', ?, 1, ?, 0, 1.0)"
        conn.execute(row, ("outside", str(outside), outside_sha))
        conn.execute(row, ("passwd", "/etc/passwd", None))
        conn.execute(row, ("gone", str(models / "gone.gguf"), None))
    conn.close()
    with damaged.open("r+b") as fh:  # the file changes after the backup
        fh.seek(100)
        fh.write(b"XXXX")

    started = time.monotonic()
    resp = _restore(hive, backup)
    elapsed = time.monotonic() - started

    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert sorted(report["restored"]) == ["boot", "gone", "good"]
    assert report["missing_files"] == ["gone"]
    refused = {r["model_id"]: r for r in report["refused"]}
    assert sorted(refused) == ["damaged", "outside", "passwd"]
    assert refused["damaged"]["code"] == "CHECKSUM_MISMATCH"
    assert refused["outside"]["code"] == refused["passwd"]["code"] == "MODEL_PATH_NOT_ALLOWED"
    assert elapsed < HASH_SECONDS / 3, f"restore took {elapsed:.2f} s: the file outside was hashed"
    listed = {m["model_id"]: m for m in hive.get("/v1/models")["models"]}
    assert sorted(listed) == ["boot", "gone", "good"]
    assert listed["good"]["sha256"] == good_sha and listed["good"]["size_bytes"] == 5000


def test_a_malformed_row_refuses_the_whole_restore(hive: HiveProc, tmp_path: Path) -> None:
    backup = _backup(hive, tmp_path, "backup.db")
    inside = hive.data_dir / "models" / "fine.gguf"
    _write_model(inside, 2000)
    with sqlite3.connect(backup) as conn:
        conn.execute("DELETE FROM models")
        conn.execute("INSERT INTO models VALUES ('fine', 'file:x', 'file', ?, 2000, NULL, 0, 1.0)", (str(inside),))
        conn.execute("INSERT INTO models VALUES ('bad', 'file:x', 'file', ?, 'big', 'nope', 0, 1.0)", (str(inside),))
    conn.close()
    err = _error(_restore(hive, backup), 400, "CATALOG_BACKUP_INVALID")
    assert "'bad'" in err["message"] and "size_bytes" in err["message"] and "sha256" in err["message"]
    assert [m["model_id"] for m in hive.get("/v1/models")["models"]] == ["boot"], "nothing half-restored"


# --------------------------------------------------------------------------- bounded spawns


def _write_huge_model_header(path: Path) -> None:
    """A small GGUF whose metadata describes a 70B-class llama (80 layers, 8192 wide, 128k context)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(80)
    writer.add_embedding_length(8192)
    writer.add_head_count(64)
    writer.add_head_count_kv(64)
    writer.add_context_length(131072)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def bounded_hive(hives: Hives, tiny_model_path: Path) -> Iterator[HiveProc]:
    config = hives.config("bounded", model_path=tiny_model_path, ram_reserve_bytes=0)
    huge = _models_dir(config) / "huge.gguf"
    _write_huge_model_header(huge)
    config["models"].append({"model_id": "huge", "reference": f"file:{huge}", "local_path": str(huge)})
    hive = hives.start(config)
    yield hive
    assert hive.workers() == [], "a refused spawn started no worker"


@pytest.mark.parametrize(
    "model, body",
    [
        ("huge", {"ctx_size": 131073}),
        ("rbee-tiny", {"ctx_size": 4097}),
        ("rbee-tiny", {"ctx_size": 1 << 30, "slots": 64}),
    ],
)
def test_a_context_above_the_trained_one_is_refused(bounded_hive: HiveProc, model: str, body: dict[str, int]) -> None:
    err = _error(bounded_hive.http.post("/v1/workers", json={"model_id": model, **body}), 422, "INVALID_REQUEST")
    assert err["details"]["field"] == "ctx_size" and "ctx_size" in err["message"]
    assert err["details"]["max_ctx_size"] == (131072 if model == "huge" else 4096)


@pytest.mark.parametrize("ctx_size, slots", [(131072, 1), (32768, 64)])
def test_a_kv_cache_larger_than_the_free_ram_is_refused(bounded_hive: HiveProc, ctx_size: int, slots: int) -> None:
    resp = bounded_hive.http.post("/v1/workers", json={"model_id": "huge", "ctx_size": ctx_size, "slots": slots})
    err = _error(resp, 507, "INSUFFICIENT_RAM")
    kv = slots * 80 * ctx_size * 4 * 8192
    assert err["details"]["kv_cache_bytes"] == kv
    assert err["details"]["required_bytes"] >= kv > err["details"]["available_bytes"]
    assert f"ctx_size {ctx_size} × {slots} slot(s)" in err["message"] and "Lower ctx_size or slots" in err["message"]


def test_the_trained_context_of_the_tiny_model_is_read(tiny_model_path: Path) -> None:
    limits = model_limits(tiny_model_path)
    assert limits.n_ctx_train == 4096
    assert limits.kv_cache_bytes(4096, 2) == 2 * 2 * 4096 * 4 * 32  # slots x layers x ctx x 4 x n_embd_kv
    assert limits.kv_cache_bytes(100, 1) == 2 * 256 * 4 * 32, "the context is padded to 256 like llama.cpp does"
