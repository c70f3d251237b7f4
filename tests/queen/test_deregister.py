"""A hive's deregistration (``DELETE /v1/hives/{hive_id}``): what a deploy calls once it pruned the hive's host."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from queen_helpers import FakeClock, heartbeat, worker_info

from rbee_runtime.common.credentials import hive_credential, new_cluster_secret, worker_credential
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.registry import Registry

SECRET = new_cluster_secret()
API_KEY = "sk-deregister"
HERE = "http://127.0.0.1:9"  # the workers' host: the queen takes only workers on their hive's host


def beat(hive_id: str, *worker_ids: str) -> dict[str, object]:
    workers = [worker_info(w, hive_id=hive_id, url=f"http://127.0.0.1:{7840 + i}") for i, w in enumerate(worker_ids)]
    body: dict[str, object] = heartbeat(hive_id, url=HERE, workers=workers).model_dump(mode="json")
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_registry_forgets_the_hive_and_its_workers_and_notices_its_return() -> None:
    reg = Registry(stale_timeout_s=10, clock=FakeClock())
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", hive_id="h1")]))
    reg.apply_heartbeat(heartbeat("h2", workers=[worker_info("w2", hive_id="h2"), worker_info("w3", hive_id="h2")]))
    reg.quarantine("w2", 60)
    assert reg.deregister("h2") == ["w2", "w3"]
    assert [h.heartbeat.hive_id for h in reg.hives()] == ["h1"]
    assert [w.info.worker_id for w in reg.workers()] == ["w1"] and reg.routable_workers("tiny") == []
    assert reg.deregister("h2") is None and reg.deregister("never") is None
    back = reg.record_heartbeat(heartbeat("h2", workers=[worker_info("w2", hive_id="h2")]))
    assert back.returned and reg.worker("w2") is not None and not reg.worker("w2").quarantined  # type: ignore[union-attr]
    assert not reg.record_heartbeat(heartbeat("h2")).returned  # said once
    assert not reg.record_heartbeat(heartbeat("h1")).returned


@pytest.mark.parametrize(
    ("label", "headers", "status", "code"),
    [
        ("no credential", {}, 401, "MISSING_INTERNAL_CREDENTIAL"),
        ("a client API key", bearer(API_KEY), 403, "INVALID_INTERNAL_CREDENTIAL"),
        ("the cluster secret itself", bearer(SECRET), 403, "INVALID_INTERNAL_CREDENTIAL"),
        ("another hive's credential", bearer(hive_credential(SECRET, "h1")), 403, "INVALID_INTERNAL_CREDENTIAL"),
        ("a worker's credential", bearer(worker_credential(hive_credential(SECRET, "h2"))), 403,
         "INVALID_INTERNAL_CREDENTIAL"),
    ],
)  # fmt: skip
def test_with_a_cluster_secret_only_the_hives_own_credential_deregisters_it(
    label: str, headers: dict[str, str], status: int, code: str
) -> None:
    with TestClient(create_app(QueenConfig(cluster_secret=SECRET, api_keys=[API_KEY]))) as client:
        for hive_id in ("h1", "h2"):
            cred = bearer(hive_credential(SECRET, hive_id))
            taken = client.post("/v1/hives/heartbeat", json=beat(hive_id), headers=cred)
            assert taken.status_code == 200, taken.text
        refused = client.delete("/v1/hives/h2", headers=headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), f"{label}: {refused.text}"
        if status == 401:
            assert "Deregistering a hive needs the hive's credential" in refused.json()["error"]["message"]
        hives = client.get("/v1/hives", headers=bearer(API_KEY)).json()["hives"]
        assert [h["hive_id"] for h in hives] == ["h1", "h2"], label


def test_the_hives_credential_deregisters_it_at_once_and_again_changes_nothing() -> None:
    with TestClient(create_app(QueenConfig(cluster_secret=SECRET, api_keys=[API_KEY]))) as client:
        for hive_id, workers in (("h1", ("h1-tiny-1",)), ("h2", ("h2-tiny-1", "h2-tiny-2"))):
            cred = bearer(hive_credential(SECRET, hive_id))
            assert client.post("/v1/hives/heartbeat", json=beat(hive_id, *workers), headers=cred).status_code == 200
        own = bearer(hive_credential(SECRET, "h2"))
        done = client.delete("/v1/hives/h2", headers=own)
        assert done.status_code == 200
        assert done.json() == {"hive_id": "h2", "deregistered": True, "workers": ["h2-tiny-1", "h2-tiny-2"]}
        assert [h["hive_id"] for h in client.get("/v1/hives", headers=bearer(API_KEY)).json()["hives"]] == ["h1"]
        workers = client.get("/v1/workers", headers=bearer(API_KEY)).json()["workers"]
        assert [w["worker_id"] for w in workers] == ["h1-tiny-1"]
        again = client.delete("/v1/hives/h2", headers=own)
        assert again.json() == {"hive_id": "h2", "deregistered": False, "workers": []}


def test_without_a_cluster_secret_the_api_key_deregisters() -> None:
    with TestClient(create_app(QueenConfig(api_keys=[API_KEY]))) as client:
        assert client.post("/v1/hives/heartbeat", json=beat("h1")).status_code == 200
        missing = client.delete("/v1/hives/h1")
        assert (missing.status_code, missing.json()["error"]["code"]) == (401, "MISSING_API_KEY")
        wrong = client.delete("/v1/hives/h1", headers=bearer("sk-wrong"))
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "INVALID_API_KEY")
        done = client.delete("/v1/hives/h1", headers=bearer(API_KEY))
        assert done.json() == {"hive_id": "h1", "deregistered": True, "workers": []}


def test_a_deregistered_hive_that_heartbeats_again_is_taken_back_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(create_app(QueenConfig(cluster_secret=SECRET))) as client:
        cred = bearer(hive_credential(SECRET, "h2"))
        assert client.post("/v1/hives/heartbeat", json=beat("h2"), headers=cred).status_code == 200
        assert client.delete("/v1/hives/h2", headers=cred).json()["deregistered"] is True
        with caplog.at_level(logging.WARNING, logger="rbee_runtime.queen.api_internal"):
            assert client.post("/v1/hives/heartbeat", json=beat("h2"), headers=cred).status_code == 200
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warned == ["hive h2 was deregistered but heartbeats again: registered again (if a deploy pruned its "
                          "host, rbee-hive still runs there)"]  # fmt: skip
        assert [h["hive_id"] for h in client.get("/v1/hives").json()["hives"]] == ["h2"]
