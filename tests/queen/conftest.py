"""Fixtures of the queen's tests: the harness's processes under the name these tests use."""

from __future__ import annotations

import pytest

from tests.support.processes import ProcessPool


@pytest.fixture(scope="module")
def procs(module_processes: ProcessPool) -> ProcessPool:
    """Processes for one test module; every one is killed afterwards, also on failure."""
    return module_processes
