"""Steps of the model catalog: the hive's SQLite catalog in process, and real hives over HTTP."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from features.steps.data_fixtures import Hives
from rbee_runtime.common.contracts import RegisterModelRequest
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import Catalog

SQLITE_MAGIC = b"SQLite format 3\x00"


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _error(data_ctx: dict[str, Any]) -> ApiError:
    error = data_ctx.get("error")
    assert isinstance(error, ApiError), f"expected an ApiError, got {error!r}"
    return error


# --------------------------------------------------------------------------- the catalog in process


@given("a hive catalog in an empty data folder", target_fixture="catalog")
def _empty_catalog(tmp_path: Path, request: pytest.FixtureRequest) -> Catalog:
    data_dir = tmp_path / "hive-data"
    assert not data_dir.exists()
    catalog = Catalog(data_dir / "catalog.db", rebuild_from_disk=True)
    request.addfinalizer(catalog.close)
    assert catalog.list_models() == []
    return catalog


@given(parsers.parse('a model file "{name}" of {size:d} bytes'))
def _model_file(data_ctx: dict[str, Any], model_files: Callable[..., Path], name: str, size: int) -> None:
    data_ctx["file"] = model_files(name, size)
    assert data_ctx["file"].stat().st_size == size


@given(parsers.parse('the file is registered as "{model_id}" from "{reference}"'))
@when(parsers.parse('the file is registered as "{model_id}" from "{reference}"'))
def _register_file(data_ctx: dict[str, Any], catalog: Catalog, model_id: str, reference: str) -> None:
    req = RegisterModelRequest(model_id=model_id, reference=reference, local_path=str(data_ctx["file"]))
    data_ctx["entry"] = catalog.register(req)


@given("these model files are registered:")
def _register_table(catalog: Catalog, model_files: Callable[..., Path], datatable: Sequence[Sequence[str]]) -> None:
    header, *rows = datatable
    for row in rows:
        fields = dict(zip(header, row, strict=True))
        path = model_files(f"{fields['model_id']}.gguf", int(fields["size"]))
        catalog.register(
            RegisterModelRequest(model_id=fields["model_id"], reference=fields["reference"], local_path=str(path))
        )
    assert len(catalog.list_models()) == len(rows)


@when(parsers.parse('the hive looks up the model "{model_id}"'))
def _look_up(data_ctx: dict[str, Any], catalog: Catalog, model_id: str) -> None:
    with pytest.raises(ApiError) as caught:
        catalog.require(model_id)
    data_ctx["error"] = caught.value


@when(parsers.parse("the model file is replaced by one of {size:d} bytes"))
def _replace_file(data_ctx: dict[str, Any], size: int) -> None:
    path: Path = data_ctx["file"]
    before = path.stat()
    path.write_bytes(b"GGUF" + random.Random(size).randbytes(size - 4))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


@when(parsers.parse('the file is registered as "{model_id}" with a wrong sha256'))
def _register_wrong_sha(data_ctx: dict[str, Any], catalog: Catalog, model_id: str) -> None:
    wrong = hashlib.sha256(b"some other file").hexdigest()
    req = RegisterModelRequest(
        model_id=model_id, reference=f"file://{data_ctx['file']}", local_path=str(data_ctx["file"]), sha256=wrong
    )
    with pytest.raises(ApiError) as caught:
        catalog.register(req)
    data_ctx["error"] = caught.value
    data_ctx["wrong_sha"] = wrong


@then(parsers.parse('the catalog finds "{model_id}" with provider "{provider}" and a size of {size:d} bytes'))
def _catalog_finds(catalog: Catalog, model_id: str, provider: str, size: int) -> None:
    entry = catalog.require(model_id)
    assert entry.provider == provider
    assert entry.size_bytes == size == Path(entry.local_path).stat().st_size


@then(parsers.parse('the entry of "{model_id}" points at the model file'))
def _entry_points_at_file(data_ctx: dict[str, Any], catalog: Catalog, model_id: str) -> None:
    entry = catalog.require(model_id)
    assert Path(entry.local_path) == data_ctx["file"]
    assert Path(entry.local_path).is_absolute()


@then(parsers.parse('the lookup fails with {status:d} "{code}" naming "{model_id}"'))
def _lookup_fails(data_ctx: dict[str, Any], status: int, code: str, model_id: str) -> None:
    error = _error(data_ctx)
    assert (error.status, error.code) == (status, code)
    assert model_id in error.message and error.details["model_id"] == model_id
    assert "POST /v1/models" in error.message, "the message says how to register a model"


@then(parsers.parse('listing the provider "{provider}" gives "{expected}"'))
def _list_provider(catalog: Catalog, provider: str, expected: str) -> None:
    assert [e.model_id for e in catalog.list_models(provider)] == _ids(expected)


@then(parsers.parse('listing the provider "{provider}" gives nothing'))
def _list_provider_empty(catalog: Catalog, provider: str) -> None:
    assert catalog.list_models(provider) == []
    assert catalog.list_models(), "the catalog itself is not empty"


@then(parsers.parse('the registration fails with {status:d} "{code}" showing the actual sha256 of the file'))
def _registration_fails(data_ctx: dict[str, Any], status: int, code: str) -> None:
    error = _error(data_ctx)
    actual = hashlib.sha256(data_ctx["file"].read_bytes()).hexdigest()
    assert (error.status, error.code) == (status, code)
    assert error.details["actual_sha256"] == actual and error.details["expected_sha256"] == data_ctx["wrong_sha"]
    assert actual in error.message and data_ctx["wrong_sha"] in error.message


@then(parsers.parse('the catalog does not hold "{model_id}"'))
def _not_held(catalog: Catalog, model_id: str) -> None:
    assert catalog.get(model_id) is None
    assert model_id not in catalog.model_ids()


# --------------------------------------------------------------------------- a real hive over HTTP


def _hive_models(data_ctx: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resp = data_ctx["hive"].http.get("/v1/models")
    assert resp.status_code == 200, resp.text
    return {m["model_id"]: m for m in resp.json()["models"]}


@given(parsers.parse('a running hive with the configured model "{model_id}" of {size:d} bytes'))
def _running_hive(
    data_ctx: dict[str, Any], hive_procs: Hives, model_files: Callable[..., Path], model_id: str, size: int
) -> None:
    path = model_files(f"{model_id}.gguf", size)
    config = hive_procs.config(
        "catalog-hive",
        models=[{"model_id": model_id, "reference": f"hf:owner/repo/{model_id}.gguf", "local_path": str(path)}],
    )
    data_ctx["files"] = {model_id: path}
    data_ctx["hive_config"] = config
    data_ctx["data_dir"] = Path(config["data_dir"])
    data_ctx["hive"] = hive_procs.start(config)
    assert model_id in _hive_models(data_ctx)


@given(parsers.parse('the model "{model_id}" of {size:d} bytes was registered over HTTP'))
def _register_over_http(data_ctx: dict[str, Any], model_files: Callable[..., Path], model_id: str, size: int) -> None:
    path = model_files(f"{model_id}.gguf", size)
    body = {"model_id": model_id, "reference": f"file://{path}", "local_path": str(path)}
    resp = data_ctx["hive"].http.post("/v1/models", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["size_bytes"] == size
    data_ctx["files"][model_id] = path


@when("the hive is stopped")
def _stop_hive(data_ctx: dict[str, Any], hive_procs: Hives) -> None:
    status = hive_procs.stop(data_ctx["hive"])
    assert status in (0, -15), f"exit status {status}:\n{data_ctx['hive'].log()}"  # uvicorn re-raises SIGTERM
    assert "shutting down" in data_ctx["hive"].log()


@when("its catalog database is overwritten with garbage")
def _garbage_db(data_ctx: dict[str, Any]) -> None:
    db = data_ctx["data_dir"] / "catalog.db"
    assert db.read_bytes().startswith(SQLITE_MAGIC)
    data_ctx["garbage"] = b"this is not a SQLite database " * 400
    db.write_bytes(data_ctx["garbage"])


@when(parsers.parse('the file of "{model_id}" is deleted'))
def _delete_model_file(data_ctx: dict[str, Any], model_id: str) -> None:
    data_ctx["files"].pop(model_id).unlink()


@when("the hive is started again")
def _start_again(data_ctx: dict[str, Any], hive_procs: Hives) -> None:
    data_ctx["hive"] = hive_procs.start(data_ctx["hive_config"])


@then(parsers.parse('the hive\'s catalog lists "{expected}" with their sizes read from disk'))
def _hive_lists(data_ctx: dict[str, Any], expected: str) -> None:
    models = _hive_models(data_ctx)
    assert sorted(models) == sorted(_ids(expected))
    for model_id, entry in models.items():
        path = data_ctx["files"][model_id]
        assert entry["local_path"] == str(path)
        assert entry["size_bytes"] == path.stat().st_size


@then('the damaged database is kept aside as "catalog.db.corrupt-<timestamp>"')
def _kept_aside(data_ctx: dict[str, Any]) -> None:
    aside = [p for p in data_ctx["data_dir"].glob("catalog.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1, aside
    assert aside[0].read_bytes() == data_ctx["garbage"]
    assert (data_ctx["data_dir"] / "catalog.db").read_bytes().startswith(SQLITE_MAGIC)


@then(parsers.parse('the hive\'s log names the models re-registered and "{missing}" as not found on disk'))
def _log_names(data_ctx: dict[str, Any], missing: str) -> None:
    log = data_ctx["hive"].log()
    line = next((ln for ln in log.splitlines() if "catalog rebuilt from the files on disk" in ln), None)
    assert line is not None, log[-3000:]
    for model_id in data_ctx["files"]:
        assert model_id in line
    assert f"not found on disk: {missing}" in line


@when("the catalog is backed up over HTTP")
def _backup(data_ctx: dict[str, Any], tmp_path: Path) -> None:
    resp = data_ctx["hive"].http.get("/v1/catalog/backup")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.sqlite3"
    assert "attachment" in resp.headers["content-disposition"]
    assert resp.content.startswith(SQLITE_MAGIC)
    path = tmp_path / "catalog-backup.db"
    path.write_bytes(resp.content)
    with sqlite3.connect(path) as conn:  # a standalone database holding the catalog's models
        ids = sorted(r[0] for r in conn.execute("SELECT model_id FROM models"))
    assert ids == sorted(_hive_models(data_ctx))
    data_ctx["backup"] = resp.content


@when(parsers.parse('the model "{model_id}" is removed from the catalog over HTTP'))
def _remove_over_http(data_ctx: dict[str, Any], model_id: str) -> None:
    resp = data_ctx["hive"].http.delete(f"/v1/models/{model_id}")
    assert resp.status_code == 204, resp.text
    assert data_ctx["files"][model_id].exists(), "removing a model from the catalog keeps its file"


@when("the backup is restored over HTTP")
def _restore(data_ctx: dict[str, Any]) -> None:
    data_ctx["restore"] = data_ctx["hive"].http.post(
        "/v1/catalog/restore", content=data_ctx["backup"], headers={"content-type": "application/vnd.sqlite3"}
    )


@then(parsers.parse('the restore reports "{expected}" restored with no missing file'))
def _restore_reports(data_ctx: dict[str, Any], expected: str) -> None:
    resp = data_ctx["restore"]
    assert resp.status_code == 200, resp.text
    assert sorted(resp.json()["restored"]) == sorted(_ids(expected))
    assert resp.json()["missing_files"] == []


def _backup_without_models(tmp_path: Path) -> bytes:
    path = tmp_path / "not-a-catalog.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('hello')")
    return path.read_bytes()


def _backup_with_broken_index(data_ctx: dict[str, Any]) -> bytes:
    """A real backup in which one row's provider no longer matches the provider index."""
    resp = data_ctx["hive"].http.get("/v1/catalog/backup")
    assert resp.status_code == 200, resp.text
    cell = b"hf:owner/repo/boot-model.gguf" + b"hf"
    assert resp.content.count(cell) == 1, "the models table holds the reference followed by its provider"
    return resp.content.replace(cell, b"hf:owner/repo/boot-model.gguf" + b"zz")


@when("the hive is asked to restore each of these damaged backups:")
def _restore_damaged(data_ctx: dict[str, Any], tmp_path: Path, datatable: Sequence[Sequence[str]]) -> None:
    makers: dict[str, Callable[[], bytes]] = {
        "a file of random bytes": lambda: random.Random(3).randbytes(64 * 1024),
        "a SQLite database without a models table": lambda: _backup_without_models(tmp_path),
        "a backup whose index disagrees with its table": lambda: _backup_with_broken_index(data_ctx),
    }
    _, *rows = datatable
    data_ctx["restores"] = [
        (reason, data_ctx["hive"].http.post("/v1/catalog/restore", content=makers[backup]())) for backup, reason in rows
    ]


@then(parsers.parse('each restore is refused with {status:d} "{code}" saying why'))
def _restores_refused(data_ctx: dict[str, Any], status: int, code: str) -> None:
    assert len(data_ctx["restores"]) == 3
    for reason, resp in data_ctx["restores"]:
        assert resp.status_code == status, resp.text
        error = resp.json()["error"]
        assert error["code"] == code
        assert reason in error["message"] and "was not changed" in error["message"], error["message"]
    leftovers = [p.name for p in data_ctx["data_dir"].iterdir() if p.name.startswith(".restore-")]
    assert leftovers == [], "the uploaded files are not left in the data folder"
