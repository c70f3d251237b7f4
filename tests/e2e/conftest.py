"""A whole local cluster started the way a user does (``rbee up --spec FILE``), from the harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import ProcessPool
from tests.support.services import LocalCluster, local_spec, start_rbee_up

API_KEY = "sk-e2e-test-key"
KEYS_ENV = "RBEE_E2E_KEYS"


def start_local_cluster(pool: ProcessPool, model_path: Path) -> LocalCluster:
    """Queen + hive + a placed worker (2 slots, context 512) of ``tiny``, its API key ``API_KEY``."""
    spec = local_spec(pool.workdir, model_path, "tiny", api_keys_env=KEYS_ENV)
    running = start_rbee_up(pool, spec, env={KEYS_ENV: API_KEY})
    running.api_key = API_KEY
    return running


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path) -> LocalCluster:
    """One local cluster for the module (stopped, with everything it started, after its last test)."""
    return start_local_cluster(module_processes, tiny_model_path)
