"""Rolling changes: batches of hosts, each changed, gated on health, and returned to its release on failure.

``rolling_deploy`` deploys one release (its id the same on every host: ``rbee.rollout.history.deploy_release_id``);
each changed host keeps it in its release history as the site's last step (``rbee/deploys/record.py``). A batch that
fails is rolled back to what it ran before (``undo:<id>``, resolved on each host). ``rolling_rollback`` returns
the hosts, batch by batch, to a kept release, with the same gate, and stops at the first batch that fails it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from rbee.client import QueenClient
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.releases import HostReleases, check_release_id
from rbee.deploy.ssh_check import describe, ssh_failures
from rbee.rollout.gate import GateTarget, wait_for
from rbee.rollout.history import deploy_release_id, read_releases
from rbee.rollout.pyinfra_run import PyinfraRun, run_pyinfra
from rbee.rollout.unit_logs import describe_reports, unit_reports
from rbee.spec import ClusterSpec
from rbee.spec.placement import assign

Say = Callable[[str], None]


def batches(spec: ClusterSpec, size: int, only: Collection[str] | None = None) -> list[list[str]]:
    """The queen's host alone first, then the other hosts ``size`` at a time, in spec order (``only``: of these
    hosts alone, the same rule: ``rbee deploy --only-drift``)."""
    queen = spec.queen_host.name
    chosen = [h.name for h in spec.hosts if only is None or h.name in only]
    others = [h for h in chosen if h != queen]
    first = [[queen]] if queen in chosen else []
    return [*first, *(others[i : i + size] for i in range(0, len(others), size))]


def targets(spec: ClusterSpec, hosts: list[str]) -> list[GateTarget]:
    """What the gate expects of each host of a batch."""
    placed = assign(spec)
    return [GateTarget(h, sum(1 for a in placed if a.host == h)) for h in hosts]


def release_targets(listings: dict[str, HostReleases | str], release: str | None, hosts: list[str]) -> list[GateTarget]:
    """What the gate expects of each host of a batch running ``release`` (None: each host's current one): the
    workers that release runs there."""
    out = []
    for host in hosts:
        found = listings.get(host)
        kept = found.get(release or found.current) if isinstance(found, HostReleases) else None
        out.append(GateTarget(host, len(kept.workers) if kept else 0))
    return out


@dataclass
class RolloutResult:
    """How a rolling change ended: the release, the batches done, and the failure (batch, reason) if any."""

    release: str = ""
    done: list[list[str]] = field(default_factory=list)
    failed_batch: list[str] = field(default_factory=list)
    reason: str = ""
    rolled_back: bool = False
    reports: dict[str, str] = field(default_factory=dict)
    """Host of the failed batch → what it told of rbee's units when the batch failed its gate (``unit_logs``)."""

    def told(self, hosts: Collection[str] | None = None) -> str:
        """The failed batch's reports (of ``hosts`` alone when given) as lines to print after the reason."""
        return describe_reports({h: r for h, r in self.reports.items() if hosts is None or h in hosts})

    @property
    def ok(self) -> bool:
        return not self.failed_batch


def _failure(run: PyinfraRun) -> str:
    failed = run.document.get("results", {}).get("failed_hosts") if run.document else None
    tail = "\n".join(line for line in run.log.splitlines()[-12:] if line.strip())
    return f"pyinfra exit {run.returncode} (failed hosts: {failed or '?'}):\n{tail}"


def _unreachable(spec: ClusterSpec, spec_file: Path, batch: list[str]) -> str:
    """The SSH preflight's classification and hint for each host of the batch that SSH cannot reach."""
    return "".join(f"\n{describe(c)}" for c in ssh_failures(spec, spec_file, batch).values())


def _return_batch(
    spec: ClusterSpec,
    spec_file: Path,
    queen: QueenClient,
    batch: list[str],
    target: str,
    gate_timeout_s: float,
    say: Say,
) -> bool:
    """Roll a failed batch back to ``target`` (``undo:<id>``: what it ran before ``<id>``; or a kept release id),
    then wait for it (True: rolled back)."""
    name = ", ".join(batch)
    back = run_pyinfra(spec_file, "-y", "--data", f"rbee_rollback={target}", limit=batch, deploy="rollback")
    if back.returncode != 0:
        say(f"batch {name}: rollback failed: {_failure(back)}")
        return False
    expected = release_targets(read_releases(spec, spec_file, batch), None, batch)
    healthy = wait_for(queen, expected, time.time(), gate_timeout_s, cluster_secret(spec.cluster))
    say(f"batch {name}: rolled back" + (f", but still unhealthy: {healthy}" if healthy else ""))
    return True


def rolling_deploy(
    spec: ClusterSpec,
    spec_file: Path,
    queen: QueenClient,
    batch_size: int,
    gate_timeout_s: float,
    say: Say,
    *,
    heal: tuple[str, Collection[str]] | None = None,
) -> RolloutResult:
    """Deploy batch after batch; stop at the first failed batch, after rolling it back to what it ran before.

    ``heal``: (the release the hosts run, those hosts): re-apply that release to them alone (``rbee deploy
    --only-drift``), in the same batches; a batch that fails returns to that release as the hosts keep it."""
    secret = cluster_secret(spec.cluster)  # the one the deploys use: the gate asks the workers with it
    release = check_release_id(heal[0] if heal else deploy_release_id(spec, spec_file))
    back_to = release if heal else f"undo:{release}"  # a heal switched no release: undo:<id> would go before it
    result = RolloutResult(release)
    say(f"release {release}")
    for batch in batches(spec, batch_size, heal[1] if heal else None):
        name = ", ".join(batch)
        say(f"batch {name}: deploying")
        started = time.time()
        run = run_pyinfra(spec_file, "-y", "--data", f"rbee_release={release}", limit=batch)
        reason = _failure(run) + _unreachable(spec, spec_file, batch) if run.returncode != 0 else ""
        if not reason:
            say(f"batch {name}: waiting for the health gate")
            reason = wait_for(queen, targets(spec, batch), time.time(), gate_timeout_s, secret)
            result.reports = unit_reports(spec_file, batch, started) if reason else {}
        if reason:
            result.failed_batch, result.reason = batch, reason
            say(f"batch {name}: FAILED ({reason.splitlines()[0]}); rolling back")
            result.rolled_back = _return_batch(spec, spec_file, queen, batch, back_to, gate_timeout_s, say)
            return result
        result.done.append(batch)
        say(f"batch {name}: healthy")
    return result


def rolling_rollback(
    spec: ClusterSpec,
    spec_file: Path,
    queen: QueenClient,
    release: str,
    listings: dict[str, HostReleases | str],
    batch_size: int,
    gate_timeout_s: float,
    say: Say,
) -> RolloutResult:
    """Return batch after batch to the kept ``release`` (every host keeps it: ``history.rollback_target``), each
    gated on its hosts running that release's workers; stop at the first batch that fails."""
    secret = cluster_secret(spec.cluster)
    result = RolloutResult(check_release_id(release))
    for batch in batches(spec, batch_size):
        name = ", ".join(batch)
        say(f"batch {name}: rolling back to {release}")
        run = run_pyinfra(spec_file, "-y", "--data", f"rbee_rollback={release}", limit=batch, deploy="rollback")
        reason = _failure(run) + _unreachable(spec, spec_file, batch) if run.returncode != 0 else ""
        if not reason:
            say(f"batch {name}: waiting for the health gate")
            reason = wait_for(queen, release_targets(listings, release, batch), time.time(), gate_timeout_s, secret)
        if reason:
            result.failed_batch, result.reason = batch, reason
            say(f"batch {name}: FAILED ({reason.splitlines()[0]}); stopping")
            return result
        result.done.append(batch)
        say(f"batch {name}: healthy on {release}")
    return result
