"""Fixtures of the hive tests (the tiny model comes from ``tests/conftest.py``: ``tiny_model_path``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import ExternalWorkers, HiveFactory, QueenStub


@pytest.fixture
def hives(tmp_path: Path) -> Iterator[HiveFactory]:
    """Starts hive processes; afterwards kills them and every worker they started."""
    factory = HiveFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def queen() -> Iterator[QueenStub]:
    """A real HTTP server acting as the queen's heartbeat endpoint."""
    stub = QueenStub()
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def external_workers(tmp_path: Path, tiny_model_path: Path) -> Iterator[ExternalWorkers]:
    """Starts workers the way systemd would (not children of any hive); kills every one afterwards."""
    factory = ExternalWorkers(tmp_path, tiny_model_path)
    try:
        yield factory
    finally:
        factory.cleanup()
