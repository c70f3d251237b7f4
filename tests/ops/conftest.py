"""Fixtures of the operations tests: a notify socket standing in for systemd's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.notify_socket import NotifySocket


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A real datagram socket at an abstract address, closed after the test."""
    with NotifySocket() as sock:
        yield sock
