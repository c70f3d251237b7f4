"""Fixtures of the worker tests: wiring of the harness (``tests/support``) under the names these tests use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import services
from tests.support.processes import ProcessPool
from tests.support.services import WorkerProc


@pytest.fixture
def start_worker(processes: ProcessPool, tiny_model_path: Path) -> Callable[..., WorkerProc]:
    """Factory: ``start_worker(slots=2, callback_url=...)`` (``options`` become ``--flags``); all killed at the end."""

    def start(worker_id: str = "w-test", model_path: Path | str = tiny_model_path, **options: Any) -> WorkerProc:
        return services.start_worker(processes, worker_id, model_path, **{"ctx_size": 2048, **options})

    return start
