"""Fixtures of the hive tests (the tiny model comes from ``tests/conftest.py``: ``tiny_model_path``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import HiveFactory, QueenStub


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
