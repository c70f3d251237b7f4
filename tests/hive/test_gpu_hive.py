"""Real hives on a machine whose GPUs are recorded ``nvidia-smi`` outputs: what they report (capabilities,
heartbeats, ``rbee hives ls``), where they refuse a worker (GPU_TOO_HOT), and how a worker that cannot use
its GPU ends (GPU_NOT_AVAILABLE, VRAM_OOM): crashed with its code, nothing left running, its place free.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
import yaml

from tests.support.processes import ProcessPool
from tests.support.services import RBEE, HiveProc, Hives, hive_command, start_queen
from tests.support.stubs import QueenStub
from tests.support.waiting import wait_until
from tests.worker.gpu_fakes import MIB, SHIM, fake_nvidia_smi


def _start(processes: ProcessPool, hives: Hives, env: dict[str, str], **settings: Any) -> HiveProc:
    """A hive whose environment (PATH: the fake nvidia-smi) is ``env``; its workers inherit it."""
    config = hives.config("gpu-hive", **settings)
    path = processes.workdir / f"hive-{config['port']}.yaml"
    path.write_text(yaml.safe_dump(config))
    hive = HiveProc(processes.start("gpu-hive", hive_command(path), env), processes, path, config)
    hive.wait_healthy()
    return hive


def test_a_hive_reports_its_gpus(processes: ProcessPool, hives: Hives, queen: QueenStub, tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-4090-hot.txt")
    hive = _start(processes, hives, env, queen_url=queen.url)
    caps = hive.get("/v1/capabilities")
    assert "cuda" in caps["backends"]
    assert [(g["index"], g["temperature_c"], g["memory_free_bytes"] // MIB, g["driver_version"], g["mig"])
            for g in caps["resources"]["gpus"]] == [(0, 91, 23012, "580.95.05", False),
                                                    (1, 52, 22980, "580.95.05", False)]  # fmt: skip
    beat = wait_until(lambda: queen.find(lambda b: b["hive_id"] == "gpu-hive"), 10, "a heartbeat")
    assert [g["temperature_c"] for g in beat["resources"]["gpus"]] == [91, 52]


def test_rbee_hives_ls_shows_each_gpu(processes: ProcessPool, hives: Hives, tmp_path: Path) -> None:
    queen = start_queen(processes)
    queen.wait_healthy()
    env = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-h100-mig-full.txt")
    _start(processes, hives, env, queen_url=queen.url)
    wait_until(lambda: queen.hives() or None, 10, "the hive at the queen")
    done = subprocess.run([RBEE, "hives", "ls", "--queen", queen.url], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "GPU " in line and line.startswith("gpu-hive")]
    assert lines == [
        "gpu-hive  GPU 0 NVIDIA H100 80GB HBM3 (MIG): memory ?, ? °C",
        "gpu-hive  GPU 1 NVIDIA H100 80GB HBM3: 78.6/79.6 GiB free, 38 °C",
    ], done.stdout


def _spawn(hive: HiveProc, **body: Any) -> Any:
    return hive.http.post("/v1/workers", json={"model_id": "rbee-tiny", "backend": "cuda", **body})


def _crashed(hive: HiveProc, worker_id: str) -> dict[str, Any]:
    return hive.wait_worker(worker_id, lambda w: w["state"] == "crashed", timeout=30)


@pytest.mark.skipif(llama_cpp.llama_supports_gpu_offload(), reason="this llama-cpp-python is a GPU build")
def test_hot_gpu_refused_and_a_cpu_build_fails_cleanly(processes: ProcessPool, hives: Hives,
                                                       tiny_model_path: Path, tmp_path: Path) -> None:  # fmt: skip
    env = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-4090-hot.txt")
    hive = _start(processes, hives, env, model_path=tiny_model_path, max_workers=1)
    refused = _spawn(hive, device=0)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "GPU_TOO_HOT" and error["details"]["temperature_c"] == 91
    assert error["details"]["max_temperature_c"] == 85 and refused.headers["retry-after"] == "30"

    spawned = _spawn(hive)  # no device: the cool one; this machine's llama.cpp cannot offload, though
    assert spawned.status_code == 202, spawned.text
    assert spawned.json()["device"] == 1
    crashed = _crashed(hive, spawned.json()["worker_id"])
    assert crashed["last_error_code"] == "GPU_NOT_AVAILABLE" and "(GPU_NOT_AVAILABLE)" in crashed["last_error"]
    assert processes.leftovers() == [], "nothing of the worker runs"
    again = hive.http.post("/v1/workers", json={"model_id": "rbee-tiny", "backend": "cpu"})
    assert again.status_code == 202, f"its place (max_workers 1) is free again: {again.text}"
    hive.wait_state(again.json()["worker_id"], "idle", timeout=30)


def test_vram_oom_while_loading_is_reported(processes: ProcessPool, hives: Hives, tiny_model_path: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    env = {**fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-2x4090.txt"), "RBEE_TEST_GPU": "oom"}
    hive = _start(processes, hives, env, model_path=tiny_model_path, max_workers=1, worker_command=SHIM)
    spawned = _spawn(hive)
    assert spawned.status_code == 202, spawned.text
    worker_id = spawned.json()["worker_id"]
    crashed = _crashed(hive, worker_id)
    assert crashed["last_error_code"] == "VRAM_OOM"
    assert "cudaMalloc failed: out of memory" in crashed["last_error"]
    assert "--n-gpu-layers -1" in crashed["last_error"] or "--n-gpu-layers -1" in (
        hive.data_dir / "logs" / f"{worker_id}.log").read_text(), "the hive decided the offload"
    assert processes.leftovers() == []
    assert hive.worker_table() == [], "no record left to re-adopt"
    assert _spawn(hive).status_code == 202, "its place is free again"
