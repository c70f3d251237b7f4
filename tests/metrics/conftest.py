"""The local cluster of the end-to-end tests (``rbee up``), reused for the metrics tests."""

from tests.e2e.conftest import cluster

__all__ = ["cluster"]
