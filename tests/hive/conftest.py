"""Fixtures of the hive tests: wiring of the harness (``tests/support``) under the names these tests use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ProcessPool
from tests.support.services import WorkerProc, start_worker
from tests.support.stubs import QueenStub


@pytest.fixture
def queen(queen_stub: QueenStub) -> QueenStub:
    """A real HTTP server acting as the queen's heartbeat endpoint."""
    return queen_stub


@pytest.fixture
def external_workers(processes: ProcessPool, tiny_model_path: Path) -> Callable[..., WorkerProc]:
    """Starts workers the way systemd would (``--managed-by external``, not a hive's child); killed at the end."""

    def start(worker_id: str, callback_url: str, **options: Any) -> WorkerProc:
        flags = {"announce_interval": 0.5, "ctx_size": 256, **options}
        return start_worker(processes, worker_id, tiny_model_path, callback_url=callback_url, managed_by="external",
                            **flags)  # fmt: skip

    return start
