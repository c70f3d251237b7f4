"""Shared fixtures: the tiny GGUF model, free TCP ports, skipping engine tests without llama.cpp."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rbee.tiny_model import ensure_tiny_model
from rbee_runtime.common.ports import free_port as get_free_port

pytest_plugins = ["tests.hosts.plugin"]

# tests/host_state are pytest-testinfra checks of deployed hosts: run by the deploy tests and molecule
# (with --hosts), never against this machine.
collect_ignore = [] if os.environ.get("RBEE_TESTINFRA") == "1" else ["host_state"]

MODEL_CACHE_DIR = Path("~/.cache/rbee/models").expanduser()
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


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """Path of the tiny random llama GGUF (written once into ~/.cache/rbee/models, then reused)."""
    return ensure_tiny_model(MODEL_CACHE_DIR)


@pytest.fixture
def free_port() -> int:
    """One free TCP port on 127.0.0.1."""
    return get_free_port()


@pytest.fixture
def free_port_factory() -> Callable[[], int]:
    """A function returning a free TCP port on 127.0.0.1 at each call (for several services)."""
    return get_free_port
