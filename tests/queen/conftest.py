"""Fixtures of the queen's tests: real processes, killed at the end of their module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from queen_processes import Processes


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Start processes for one test module; every one is stopped afterwards, also on failure."""
    processes = Processes(tmp_path_factory.mktemp("procs"))
    try:
        yield processes
    finally:
        processes.close()
