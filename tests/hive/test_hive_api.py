"""The hive's HTTP API against a real hive process (no worker needed for these)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from rbee_runtime.common.ports import free_port
from tests.support.processes import ProcessPool
from tests.support.services import HiveProc, Hives, start_hive
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def hive(module_processes: ProcessPool) -> HiveProc:
    """A hive whose RAM reserve is absurd (every spawn is refused), whose queen is down,
    and whose catalog.db is garbage at start."""
    workdir = module_processes.workdir
    factory = Hives(module_processes)
    model = workdir / "boot.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 2000)
    config = factory.config(
        "api",
        ram_reserve_bytes=10**16,
        queen_url=f"http://127.0.0.1:{free_port()}",
        models=[{"model_id": "boot", "reference": "hf:owner/repo/boot.gguf", "local_path": str(model)}],
    )
    data_dir = Path(config["data_dir"])
    data_dir.mkdir(parents=True)
    (data_dir / "catalog.db").write_bytes(b"definitely not sqlite " * 500)
    return factory.start(config)


def _models_folder(hive: HiveProc) -> Path:
    """``<data_dir>/models``: a folder ``POST /v1/models`` takes files from."""
    folder = hive.data_dir / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _error(resp: object, status: int, code: str) -> dict[str, object]:
    assert getattr(resp, "status_code", None) == status, getattr(resp, "text", resp)
    body = resp.json()["error"]  # type: ignore[attr-defined]
    assert body["code"] == code
    assert body["message"]
    return dict(body)


def test_health_and_capabilities(hive: HiveProc) -> None:
    health = hive.http.get("/health").json()
    assert health["service"] == "hive" and health["id"] == "api" and health["status"] == "ok"
    caps = hive.http.get("/v1/capabilities").json()
    assert caps["hive_id"] == "api"
    assert "cpu" in caps["backends"]
    assert caps["resources"]["ram_total_bytes"] > 0 and caps["resources"]["cpu_count"] >= 1
    assert caps["resources"]["gpus"] == []


def test_corrupt_catalog_was_rebuilt_with_configured_models(hive: HiveProc) -> None:
    data_dir = Path(hive.config["data_dir"])
    assert list(data_dir.glob("catalog.db.corrupt-*")), "the unreadable catalog must be moved aside"
    models = hive.http.get("/v1/models").json()["models"]
    boot = next(m for m in models if m["model_id"] == "boot")
    assert boot["provider"] == "hf" and boot["size_bytes"] == 2004


def test_model_crud(hive: HiveProc) -> None:
    folder = _models_folder(hive)
    path = folder / "m.gguf"
    path.write_bytes(b"x" * 777)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    body = {"model_id": "crud", "reference": f"file://{path}", "local_path": str(path), "sha256": digest}
    resp = hive.http.post("/v1/models", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["size_bytes"] == 777 and resp.json()["provider"] == "file"
    assert [m["model_id"] for m in hive.http.get("/v1/models", params={"provider": "file"}).json()["models"]] == [
        "crud"
    ]
    assert hive.http.delete("/v1/models/crud").status_code == 204
    _error(hive.http.delete("/v1/models/crud"), 404, "MODEL_NOT_FOUND")


def test_model_errors(hive: HiveProc) -> None:
    folder = _models_folder(hive)
    path = folder / "m.gguf"
    path.write_bytes(b"y" * 10)
    missing = {"model_id": "x", "reference": "file:///nowhere.gguf", "local_path": str(folder / "nowhere.gguf")}
    _error(hive.http.post("/v1/models", json=missing), 400, "MODEL_FILE_MISSING")
    bad_sum = {"model_id": "x", "reference": "file:///m", "local_path": str(path), "sha256": "ab" * 32}
    err = _error(hive.http.post("/v1/models", json=bad_sum), 400, "CHECKSUM_MISMATCH")
    assert err["type"] == "invalid_request_error"
    err = _error(hive.http.post("/v1/models", json={"model_id": "x"}), 422, "INVALID_REQUEST")
    assert "reference" in str(err["message"])
    assert "x" not in [m["model_id"] for m in hive.http.get("/v1/models").json()["models"]]


def test_spawn_refused_for_ram(hive: HiveProc) -> None:
    err = _error(hive.http.post("/v1/workers", json={"model_id": "boot"}), 507, "INSUFFICIENT_RAM")
    details = err["details"]
    assert isinstance(details, dict)
    assert details["required_bytes"] > details["available_bytes"] > 0
    assert "ram_reserve_bytes" in str(err["message"])
    assert hive.workers() == []


def test_spawn_and_worker_errors(hive: HiveProc) -> None:
    _error(hive.http.post("/v1/workers", json={"model_id": "ghost"}), 404, "MODEL_NOT_FOUND")
    _error(hive.http.post("/v1/workers", json={"model_id": "boot", "backend": "metal"}), 400, "BACKEND_UNAVAILABLE")
    _error(hive.http.post("/v1/workers", json={"model_id": "boot", "slots": 0}), 422, "INVALID_REQUEST")
    ready = {
        "worker_id": "worker-ghost",
        "url": "http://127.0.0.1:1",
        "model_id": "boot",
        "backend": "cpu",
        "device": 0,
        "slots_total": 1,
        "pid": 1,
    }
    _error(hive.http.post("/v1/workers/ready", json=ready), 404, "WORKER_NOT_FOUND")
    _error(hive.http.delete("/v1/workers/worker-ghost"), 404, "WORKER_NOT_FOUND")


def test_unreachable_queen_does_not_stop_the_hive(hive: HiveProc) -> None:
    time.sleep(0.5)  # a few heartbeat intervals
    assert hive.http.get("/health").status_code == 200
    wait_until(lambda: "unreachable" in hive.log(), timeout=5, what="a log line about the unreachable queen")
    assert hive.proc is not None and hive.proc.poll() is None


def test_second_hive_on_same_data_dir_is_refused(hive: HiveProc, processes: ProcessPool) -> None:
    config = {**hive.config, "port": free_port(), "hive_id": "api-twin"}
    twin = start_hive(processes, config)
    assert twin.wait_exit(timeout=20) == 1
    assert "already uses data_dir" in twin.log()
    assert hive.http.get("/health").status_code == 200
