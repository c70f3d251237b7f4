"""The health gate of a rolling deploy: a batch passes when the queen sees each of its hives fresh,
their placed workers ready, and each of those workers serves a real completion.

The rule is ``rbee.deploy.health``'s (the one every health gate uses); this module says what a
batch expects of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rbee.client import QueenClient
from rbee.deploy import health


@dataclass(frozen=True)
class GateTarget:
    """One host of a batch: its hive id and how many placed workers it must run."""

    host: str
    placed_workers: int


def expectation(targets: list[GateTarget], since: float, cluster_secret: str | None = None) -> health.Expectation:
    """A batch's hives reporting after ``since`` (wall time its deploy ended), their deployed workers serving
    (asked with their credential, derived from ``cluster_secret``)."""
    placed = {t.host: t.placed_workers for t in targets}
    return health.Expectation(placed, managed_by="external", since=since, serves=True, cluster_secret=cluster_secret)


def wait_for(
    queen: QueenClient, targets: list[GateTarget], since: float, timeout_s: float, cluster_secret: str | None = None
) -> str:
    """Poll the gate until it passes ("") or the timeout ends (what is still missing)."""
    return health.wait_ready(queen, expectation(targets, since, cluster_secret), timeout_s, interval_s=1.0)
