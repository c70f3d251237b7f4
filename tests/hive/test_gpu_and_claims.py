"""VRAM preflight (pure functions and the hive's use of them) and the rule that a worker id has one live owner."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_runtime.common.contracts import GpuInfo, RegisterModelRequest, SpawnRequest, WorkerInfo, WorkerReady
from rbee_runtime.common.contracts import WorkerState as S
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive import service
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.resources import check_vram, choose_gpu, required_vram
from rbee_runtime.hive.service import Hive

GIB = 1 << 30
MIB = 1 << 20
TWO_4090 = [
    GpuInfo(index=0, name="RTX 4090", memory_total_bytes=24564 * MIB, memory_free_bytes=23012 * MIB),
    GpuInfo(index=1, name="RTX 4090", memory_total_bytes=24564 * MIB, memory_free_bytes=1620 * MIB),
]


def test_check_vram() -> None:
    assert check_vram(4 * GIB, TWO_4090, 0).index == 0
    with pytest.raises(ApiError) as err:
        check_vram(4 * GIB, TWO_4090, 1, model_id="m")
    assert (err.value.status, err.value.code) == (507, "VRAM_EXHAUSTED")
    assert err.value.details["required_bytes"] == required_vram(4 * GIB) == int(4.8 * GIB)
    assert err.value.details["available_bytes"] == 1620 * MIB
    assert "device 0" in err.value.message and "'m'" in err.value.message
    with pytest.raises(ApiError) as err:
        check_vram(GIB, TWO_4090, 0, pending={0: 22 * GIB})
    assert err.value.code == "VRAM_EXHAUSTED" and err.value.details["available_bytes"] == 23012 * MIB - 22 * GIB
    with pytest.raises(ApiError) as err:
        check_vram(GIB, TWO_4090, 7)
    assert (err.value.status, err.value.code) == (400, "DEVICE_UNAVAILABLE")
    with pytest.raises(ApiError) as err:
        check_vram(GIB, [], 0)
    assert "backend cpu" in err.value.message


def test_choose_gpu() -> None:
    assert choose_gpu(GIB, TWO_4090).index == 0
    assert choose_gpu(GIB, TWO_4090, allowed=[1]).index == 1
    assert choose_gpu(GIB, TWO_4090, pending={0: 22 * GIB}).index == 1, "the freest after pending wins"
    equal = [g.model_copy(update={"memory_free_bytes": 8 * GIB}) for g in TWO_4090]
    assert choose_gpu(GIB, equal).index == 0, "ties go to the lower index"
    with pytest.raises(ApiError) as err:
        choose_gpu(30 * GIB, TWO_4090)
    assert err.value.code == "VRAM_EXHAUSTED"
    assert err.value.details["free_bytes_by_device"] == {"0": 23012 * MIB, "1": 1620 * MIB}
    with pytest.raises(ApiError) as err:
        choose_gpu(GIB, TWO_4090, allowed=[3])
    assert (err.value.status, err.value.code) == (400, "DEVICE_UNAVAILABLE")


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    """An in-process hive (not started: no HTTP, no supervisor loop)."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 1000)
    config = HiveConfig(hive_id="unit", data_dir=tmp_path / "data", backend="cuda", devices=[0, 1])
    h = Hive(config)
    h.catalog.register(RegisterModelRequest(model_id="m", reference="hf:o/r/m.gguf", local_path=str(model)))
    try:
        yield h
    finally:
        h.catalog.close()
        os.close(h._lock_fd)


def _info(worker_id: str, state: S, url: str, managed_by: str = "external", device: int = 0) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(worker_id=worker_id, hive_id="unit", model_id="m", url=url, state=state, backend="cuda",
                      device=device, started_at=now, last_activity=now, managed_by=managed_by)  # fmt: skip


def test_gpu_preflight_chooses_and_checks(hive: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [g.model_copy(update={"memory_free_bytes": 1500}) for g in TWO_4090]
    gpus[1] = gpus[1].model_copy(update={"memory_free_bytes": 2000})
    monkeypatch.setattr(service, "detect_gpus", lambda: gpus)
    assert hive.gpu_preflight(SpawnRequest(model_id="m")).device == 1
    assert hive.gpu_preflight(SpawnRequest(model_id="m", device=0)).device == 0
    assert hive.gpu_preflight(SpawnRequest(model_id="m", backend="cpu")).device is None
    assert hive.gpu_preflight(SpawnRequest(model_id="ghost")).device is None, "the spawn reports MODEL_NOT_FOUND"
    hive.registry.add(_info("loading", S.LOADING, "http://127.0.0.1:9", "hive", device=1))
    hive.registry.add(_info("other", S.LOADING, "http://127.0.0.1:8", "hive", device=0))
    with pytest.raises(ApiError) as err:  # both GPUs less what the loading workers of m will take
        hive.gpu_preflight(SpawnRequest(model_id="m"))
    assert err.value.code == "VRAM_EXHAUSTED"
    monkeypatch.setattr(service, "detect_gpus", list)
    assert hive.gpu_preflight(SpawnRequest(model_id="m")).device is None, "no GPU: the spawn decides"


def _ready(worker_id: str, url: str, managed_by: str = "external") -> WorkerReady:
    return WorkerReady(worker_id=worker_id, url=url, model_id="m", backend="cpu", device=0, slots_total=1, pid=5,
                       managed_by=managed_by)  # fmt: skip


def test_ready_claims(hive: Hive) -> None:
    hive.registry.add(_info("ext", S.IDLE, "http://10.0.0.1:7840"))
    hive.registry.add(_info("own", S.LOADING, "http://box:7841", managed_by="hive"))
    hive.check_ready_claim(_ready("ext", "http://10.0.0.1:7840/"))  # the same worker again
    hive.check_ready_claim(_ready("own", "http://127.0.0.1:7841", managed_by="hive"))  # same port, local address
    hive.check_ready_claim(_ready("new", "http://10.0.0.1:7999"))  # unknown id
    for claim in (
        _ready("ext", "http://10.0.0.2:7840"),
        _ready("own", "http://127.0.0.1:7999", managed_by="hive"),
        _ready("own", "http://box:7841"),  # an external worker claiming the hive's own worker
    ):
        with pytest.raises(ApiError) as err:
            hive.check_ready_claim(claim)
        assert (err.value.status, err.value.code) == (409, "WORKER_ALREADY_REGISTERED")
        assert err.value.details["announced_url"] == claim.url
    hive.registry.set_state("ext", S.CRASHED)
    hive.check_ready_claim(_ready("ext", "http://10.0.0.2:7840"))  # a crashed worker's id can be taken over
