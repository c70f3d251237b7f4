"""Heartbeat rules of the queen: one live owner per worker id, and compatible versions only."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from queen_helpers import FakeClock, heartbeat, worker_info

from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.api_ops import check_hive_version, major_minor
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.registry import Registry, Rejection


def test_a_worker_id_reported_live_by_another_online_hive_is_rejected() -> None:
    reg = Registry(stale_timeout_s=10, clock=FakeClock())
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", hive_id="h1")]))
    outcome = reg.record_heartbeat(
        heartbeat("h2", workers=[worker_info("w1", hive_id="h2"), worker_info("w2", hive_id="h2")])
    )
    assert outcome.rejected == [Rejection("w1", "h1")] and outcome.removed == []
    assert {w.info.worker_id: w.info.hive_id for w in reg.workers()} == {"w1": "h1", "w2": "h2"}
    h2 = next(h for h in reg.hives() if h.heartbeat.hive_id == "h2")
    assert [w.worker_id for w in h2.heartbeat.workers] == ["w2"]
    assert reg.record_heartbeat(heartbeat("h1", workers=[worker_info("w1", hive_id="h1")])).rejected == []


def test_the_id_moves_when_its_owner_is_stale_or_its_worker_is_gone() -> None:
    clock = FakeClock()
    reg = Registry(stale_timeout_s=10, clock=clock)
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1", hive_id="h1")]))
    clock.advance(10.5)  # h1 is stale
    assert reg.record_heartbeat(heartbeat("h2", workers=[worker_info("w1", hive_id="h2")])).rejected == []
    assert [(w.info.worker_id, w.info.hive_id) for w in reg.workers()] == [("w1", "h2")]

    reg.apply_heartbeat(heartbeat("h3", workers=[worker_info("w9", hive_id="h3", state="crashed")]))
    assert reg.record_heartbeat(heartbeat("h2", workers=[worker_info("w9", hive_id="h2")])).rejected == []
    assert reg.worker("w9") is not None and reg.worker("w9").info.hive_id == "h2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("hive", "queen", "refused"),
    [
        ("0.1.0", "0.1.0", False),
        ("0.1.7", "0.1.0", False),
        ("v0.1.2", "0.1.0", False),
        ("0.1.0rc1", "0.1.3", False),
        ("test", "0.1.0", False),
        ("0.2.0", "0.1.0", True),
        ("1.1.0", "0.1.0", True),
        ("0.0.9", "0.1.0", True),
    ],
)
def test_version_compatibility(hive: str, queen: str, refused: bool) -> None:
    if not refused:
        check_hive_version("h", hive, queen)
        return
    with pytest.raises(ApiError) as err:
        check_hive_version("h", hive, queen)
    assert (err.value.status, err.value.code) == (409, "VERSION_MISMATCH")
    assert hive in err.value.message and queen in err.value.message
    older = "hive" if major_minor(hive) < major_minor(queen) else "queen"  # type: ignore[operator]
    assert err.value.details["upgrade"] == older and f"Upgrade the {older}" in err.value.message


def test_heartbeat_endpoint_applies_both_rules() -> None:
    with TestClient(create_app(QueenConfig())) as client:
        here = "http://127.0.0.1:9"  # the workers' host: the queen takes only workers on their hive's host
        beat = heartbeat("h1", url=here, workers=[worker_info("w1", hive_id="h1")]).model_copy(
            update={"version": "0.1.0"}
        )
        assert client.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json")).json()["rejected_workers"] == []
        other = heartbeat("h2", url=here, workers=[worker_info("w1", hive_id="h2")])
        ack = client.post("/v1/hives/heartbeat", json=other.model_dump(mode="json"))
        assert ack.status_code == 200
        (rejected,) = ack.json()["rejected_workers"]
        assert (rejected["worker_id"], rejected["code"], rejected["owner_hive_id"]) == (
            "w1",
            "WORKER_ALREADY_REGISTERED",
            "h1",
        )
        old = heartbeat("h3").model_copy(update={"version": "9.9.0"})
        refused = client.post("/v1/hives/heartbeat", json=old.model_dump(mode="json"))
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "VERSION_MISMATCH"
        assert "h3" not in [h["hive_id"] for h in client.get("/v1/hives").json()["hives"]]
