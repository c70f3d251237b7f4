"""pytest-testinfra checks of a deployed host's real state; run against hosts with ``--hosts``.

They are not part of the plain test run (``tests/conftest.py`` ignores this folder unless
``RBEE_TESTINFRA=1``): the deploy tests and molecule's verifier run them after a deploy::

    RBEE_TESTINFRA=1 RBEE_QUEEN_HOST=h1 RBEE_PLACED="h2:tiny-1,h3:tiny-1" \
      pytest tests/host_state --hosts=paramiko://root@10.210.0.11,... --ssh-config=...
"""

from __future__ import annotations

import os

import pytest
import testinfra


@pytest.fixture
def hostname(host: testinfra.host.Host) -> str:
    return str(host.check_output("hostname")).strip()


@pytest.fixture
def is_queen(hostname: str) -> bool:
    return hostname == os.environ.get("RBEE_QUEEN_HOST", "h1")


@pytest.fixture
def placed(hostname: str) -> list[str]:
    """Worker instances placed on this host, from ``RBEE_PLACED`` (``host:instance,...``)."""
    pairs = [p.split(":", 1) for p in os.environ.get("RBEE_PLACED", "").split(",") if ":" in p]
    return [instance for name, instance in pairs if name == hostname]
