from __future__ import annotations

from typing import Any

from pytest import MonkeyPatch
from queen_helpers import FakeClock, heartbeat, worker_info

from rbee_runtime.queen import registry as registry_module
from rbee_runtime.queen.registry import Registry


def test_online_stale_dropped() -> None:
    clock = FakeClock()
    reg = Registry(stale_timeout_s=10, clock=clock)
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1")]))
    assert [h.status for h in reg.hives()] == ["online"]
    assert [w.info.worker_id for w in reg.workers()] == ["w1"]
    assert reg.routable_workers("m")

    clock.advance(10.5)
    assert [h.status for h in reg.hives()] == ["stale"]
    assert reg.routable_workers("m") == []  # never routed to
    assert reg.models() == []
    assert reg.knows_model("m")

    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1")]))
    assert [h.status for h in reg.hives()] == ["online"]

    clock.advance(20.5)
    assert reg.hives() == []
    assert reg.workers() == []
    assert not reg.knows_model("m")


def test_worker_missing_from_heartbeat_is_removed() -> None:
    reg = Registry(stale_timeout_s=10, clock=FakeClock())
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1"), worker_info("w2")]))
    removed = reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w2")]))
    assert removed == ["w1"]
    assert [w.info.worker_id for w in reg.workers()] == ["w2"]


def test_only_idle_and_busy_workers_are_routable() -> None:
    reg = Registry(stale_timeout_s=10, clock=FakeClock())
    reg.apply_heartbeat(
        heartbeat(
            "h1",
            workers=[
                worker_info("a", state="idle"),
                worker_info("b", state="busy"),
                worker_info("c", state="loading"),
                worker_info("d", state="crashed"),
                worker_info("e", state="draining"),
            ],
        )
    )
    assert [w.worker_id for w in reg.routable_workers("m")] == ["a", "b"]
    assert [w.worker_id for w in reg.routable_workers("m", exclude={"a"})] == ["b"]
    assert [w.worker_id for w in reg.loading_workers("m")] == ["c"]


def test_quarantine_expires() -> None:
    clock = FakeClock()
    reg = Registry(stale_timeout_s=10, clock=clock)
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1")]))
    reg.quarantine("w1", 5)
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1")]))
    assert reg.routable_workers("m") == []
    clock.advance(5.1)
    reg.apply_heartbeat(heartbeat("h1", workers=[worker_info("w1")]))
    assert [w.worker_id for w in reg.routable_workers("m")] == ["w1"]


def test_models_and_spawn_candidates() -> None:
    reg = Registry(stale_timeout_s=10, clock=FakeClock())
    reg.apply_heartbeat(heartbeat("h1", models=["a", "b"], max_workers=2, workers=[worker_info("w", "a")]))
    reg.apply_heartbeat(heartbeat("h2", models=["b"], max_workers=2, ram_available=1 << 30))
    reg.apply_heartbeat(heartbeat("h3", models=["b"], max_workers=2, ram_available=4 << 30))
    assert reg.models() == ["a", "b"]
    # h1 has one worker running (less free capacity); h3 has more RAM than h2.
    assert [h.heartbeat.hive_id for h in reg.spawn_candidates("b")] == ["h3", "h2", "h1"]
    assert reg.spawn_candidates("zzz") == []


def test_upsert_worker_needs_known_hive() -> None:
    reg = Registry(stale_timeout_s=10, clock=FakeClock())
    assert not reg.upsert_worker(worker_info("w1", hive_id="nowhere"))
    reg.apply_heartbeat(heartbeat("h1"))
    assert reg.upsert_worker(worker_info("w1", state="loading"))
    assert reg.loading_workers("m")[0].worker_id == "w1"


def test_routing_reads_an_index_by_model_rebuilt_only_when_the_cluster_changes(monkeypatch: MonkeyPatch) -> None:
    builds: list[int] = []
    real = registry_module._build_index

    def counting(hives: Any) -> Any:
        builds.append(len(hives))
        return real(hives)

    monkeypatch.setattr(registry_module, "_build_index", counting)
    clock = FakeClock()
    reg = Registry(stale_timeout_s=10, clock=clock)
    others = [worker_info(f"o{i}", "other", url=f"http://127.0.0.1:{2000 + i}") for i in range(200)]
    reg.apply_heartbeat(heartbeat("h1", models=["m", "other"], workers=[*others, worker_info("w2", "m"),
                                                                         worker_info("w1", "m")]))  # fmt: skip
    for _ in range(50):
        assert [w.worker_id for w in reg.routable_workers("m")] == ["w1", "w2"]
        assert [w.worker_id for w in reg.routable_workers("m", {"w1"})] == ["w2"]
        assert reg.knows_model("other") and not reg.knows_model("nope")
        assert reg.peer_at("http://127.0.0.1:2007") == ("h1", "worker")
    assert builds == [1]  # one index for 200 queries
    reg.quarantine("w1", 5)
    assert [w.worker_id for w in reg.routable_workers("m")] == ["w2"]  # quarantine is read live
    reg.apply_heartbeat(heartbeat("h1", models=["m"], workers=[worker_info("w1", "m")]))
    assert reg.routable_workers("other") == [] and not reg.knows_model("other")
    assert builds == [1, 1]
    clock.advance(10.5)
    assert reg.routable_workers("m") == []  # stale: never routed to
