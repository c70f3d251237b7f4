"""A schema-driven fuzz of the queen's public API (schemathesis) against a whole local cluster.

``rbee up`` starts queen, hive and worker on the tiny model (with an API key, as ``tests/e2e`` does);
schemathesis reads the queen's ``/openapi.json`` and sends a bounded number of generated requests per
operation, valid and invalid; none may be answered with a 5xx. Half of the completion bodies name the
served model, so generation runs too. Afterwards the same worker still serves a chat completion.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.generation.modes import GenerationMode

from tests.e2e.conftest import API_KEY, start_local_cluster
from tests.support.processes import ProcessPool
from tests.support.services import LocalCluster

pytestmark = pytest.mark.engine

MODEL = "tiny"  # the model id of the spec of start_local_cluster
#: Generated cases per operation (8 operations; the whole fuzz stays well under a minute).
MAX_EXAMPLES = 35
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path) -> LocalCluster:
    return start_local_cluster(module_processes, tiny_model_path)


@pytest.fixture(scope="module")
def serving_before(cluster: LocalCluster) -> list[str]:
    """The ids of the workers serving before the fuzz."""
    return _serving(cluster)


def _serving(cluster: LocalCluster) -> list[str]:
    workers = httpx.get(f"{cluster.queen_url}/v1/workers", headers=AUTH, timeout=10).json()["workers"]
    return sorted(w["worker_id"] for w in workers if w["routable"])


@pytest.fixture(scope="module")
def queen_schema(cluster: LocalCluster, serving_before: list[str]) -> Any:
    assert serving_before
    return schemathesis.openapi.from_url(f"{cluster.queen_url}/openapi.json", timeout=10)


def _aim_at_the_model(case: Case[Any]) -> None:
    """Half of the completion bodies (chosen by their content) ask for the served model."""
    body = case.body
    if isinstance(body, dict) and "model" in body and zlib.crc32(repr(sorted(body)).encode()) % 2 == 0:
        body["model"] = MODEL


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_the_queen_answer_5xx(queen_schema: Any, cluster: LocalCluster, mode: GenerationMode) -> None:
    """Valid (``positive``) and schema-violating (``negative``) requests to every operation of the schema.

    (Hypothesis is driven directly: schemathesis' lazy pytest loader does not run on pytest 9.)
    """
    operations = [result.ok() for result in queen_schema.get_all_operations()]
    assert {"POST /v1/chat/completions", "POST /v1/completions"} <= {f"{o.method.upper()} {o.path}" for o in operations}
    unsatisfiable = []
    for operation in operations:

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def no_server_error(case: Case[Any]) -> None:
            _aim_at_the_model(case)
            case.call_and_validate(base_url=cluster.queen_url, headers=AUTH, checks=[not_a_server_error], timeout=60)

        try:
            no_server_error()
        except Unsatisfiable:  # negative mode: no input of this operation can violate the schema (e.g. GET /health)
            if mode is GenerationMode.POSITIVE:
                raise
            unsatisfiable.append(f"{operation.method.upper()} {operation.path}")
    assert not {"POST /v1/chat/completions", "POST /v1/completions"} & set(unsatisfiable)


def test_the_cluster_still_serves_after_the_fuzz(cluster: LocalCluster, serving_before: list[str]) -> None:
    assert _serving(cluster) == serving_before, "a worker was quarantined or replaced"
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
    response = httpx.post(f"{cluster.queen_url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 4
