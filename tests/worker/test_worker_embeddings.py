"""An ``--embedding`` worker on its own (real process, llama.cpp on the tiny model): embeddings as floats and base64,
completions refused, and the deploy's health gate counting it as serving."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rbee.deploy import health
from rbee_runtime.common.contracts import QueenWorker
from rbee_runtime.common.ports import free_port
from tests.support.processes import ProcessPool
from tests.support.services import PY, WorkerProc

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def worker(tiny_model_path: Path, module_processes: ProcessPool) -> Iterator[WorkerProc]:
    port = free_port()
    args = ["--worker-id", "w-embed", "--model-id", "embed", "--model-path", str(tiny_model_path), "--port",
            str(port), "--slots", "1", "--ctx-size", "256", "--threads", "1", "--embedding"]  # fmt: skip
    w = WorkerProc(module_processes.start("w-embed", [PY, "-m", "rbee_runtime.worker", *args]), port, "w-embed", 1)
    w.wait_idle()
    yield w
    assert w.alive(), w.log()


def embed(worker: WorkerProc, **body: object) -> httpx.Response:
    return httpx.post(f"{worker.url}/v1/embeddings", json={"model": "embed", **body}, timeout=30)


def test_floats_and_base64_are_the_same_unit_vector(worker: WorkerProc) -> None:
    floats = embed(worker, input="the bee").json()
    packed = embed(worker, input=["the bee"], encoding_format="base64").json()
    vector = np.array(floats["data"][0]["embedding"])
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (64,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    assert np.allclose(vector, decoded, atol=1e-6)
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 0


def test_completions_are_refused_naming_model(worker: WorkerProc) -> None:
    response = httpx.post(f"{worker.url}/v1/completions", json={"model": "embed", "prompt": "x"}, timeout=30)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("WRONG_MODEL_TYPE", "model")


def test_the_deploy_health_gate_counts_it_as_serving(worker: WorkerProc) -> None:
    placed = QueenWorker.model_validate({
        "worker_id": "w-embed", "hive_id": "h1", "model_id": "embed", "url": worker.url, "state": "idle",
        "started_at": 1.0, "last_activity": 2.0, "managed_by": "external", "status": "online", "routable": True,
        "in_flight": 0,
    })  # fmt: skip
    with httpx.Client(timeout=30) as http:
        assert health.serves(http, placed) == ""
