"""Test wiring: the harness's fixtures (``tests/support``), the test hosts, skipping engine tests without llama.cpp."""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest_plugins = ["tests.hosts.plugin", "tests.support.fixtures"]

# tests/host_state are pytest-testinfra checks of deployed hosts: run by the deploy tests and molecule
# (with --hosts), never against this machine.
collect_ignore = [] if os.environ.get("RBEE_TESTINFRA") == "1" else ["host_state"]

ENGINE_AVAILABLE = importlib.util.find_spec("llama_cpp") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.engine`` tests, with the reason, when llama-cpp-python is not importable."""
    if ENGINE_AVAILABLE:
        return
    if os.environ.get("RBEE_REQUIRE_ENGINE") == "1":
        raise pytest.UsageError("RBEE_REQUIRE_ENGINE=1 but llama_cpp is not importable: run scripts/bootstrap.sh dev")
    skip = pytest.mark.skip(
        reason="llama-cpp-python is not installed (pip install -e '.[engine]'); engine tests skipped"
    )
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(skip)
