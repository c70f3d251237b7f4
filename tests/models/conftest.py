"""Fixtures of the model fetch tests: a local model server, a GGUF-looking payload, a clean environment."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import httpx
import pytest

from tests.models.server import ModelServer, model_server

PAYLOAD_SIZE = 3 * 1024 * 1024 + 4321


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HF token or endpoint leaks in from the environment of the test run."""
    for name in ("HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with model_server() as running:
        yield running


@pytest.fixture(scope="session")
def payload() -> bytes:
    """About 3 MiB of random bytes behind the GGUF magic (several 1 MiB chunks)."""
    return b"GGUF" + random.Random(7).randbytes(PAYLOAD_SIZE - 4)


@pytest.fixture(scope="session")
def payload_sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A client that ignores proxy settings, with a short stall (read) timeout."""
    with httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=2.0)) as http:
        yield http


@pytest.fixture
def waits() -> list[float]:
    """The backoff waits asked by fetch_model (pass ``sleep=waits.append``: no real sleeping)."""
    return []
