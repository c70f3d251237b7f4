"""A rolling deploy: batches of hosts, each deployed, gated on health, and rolled back on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rbee.client import QueenClient
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.ssh_check import describe, ssh_failures
from rbee.rollout.gate import GateTarget, wait_for
from rbee.rollout.pyinfra_run import PyinfraRun, run_pyinfra
from rbee.spec import ClusterSpec
from rbee.spec.placement import assign

Say = Callable[[str], None]


def batches(spec: ClusterSpec, size: int) -> list[list[str]]:
    """The queen's host alone first, then the other hosts ``size`` at a time, in spec order."""
    queen = spec.queen_host.name
    others = [h.name for h in spec.hosts if h.name != queen]
    return [[queen], *(others[i : i + size] for i in range(0, len(others), size))]


def targets(spec: ClusterSpec, hosts: list[str]) -> list[GateTarget]:
    """What the gate expects of each host of a batch."""
    placed = assign(spec)
    return [GateTarget(h, sum(1 for a in placed if a.host == h)) for h in hosts]


@dataclass
class RolloutResult:
    """How a rolling deploy ended: the batches done, and the failure (host, reason) if any."""

    done: list[list[str]] = field(default_factory=list)
    failed_batch: list[str] = field(default_factory=list)
    reason: str = ""
    rolled_back: bool = False

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


def rolling_deploy(
    spec: ClusterSpec, spec_file: Path, queen: QueenClient, batch_size: int, gate_timeout_s: float, say: Say
) -> RolloutResult:
    """Deploy batch after batch; stop at the first failed batch, after rolling it back."""
    result = RolloutResult()
    secret = cluster_secret(spec.cluster)  # the one the deploys use: the gate asks the workers with it
    for batch in batches(spec, batch_size):
        say(f"batch {', '.join(batch)}: keeping the running release aside")
        kept = run_pyinfra(spec_file, "-y", limit=batch, deploy="snapshot")
        if kept.returncode != 0:
            why = f"{_failure(kept)}{_unreachable(spec, spec_file, batch)}"
            result.failed_batch, result.reason = batch, f"could not keep the running release: {why}"
            return result
        say(f"batch {', '.join(batch)}: deploying")
        run = run_pyinfra(spec_file, "-y", limit=batch)
        reason = _failure(run) + _unreachable(spec, spec_file, batch) if run.returncode != 0 else ""
        if not reason:
            say(f"batch {', '.join(batch)}: waiting for the health gate")
            reason = wait_for(queen, targets(spec, batch), time.time(), gate_timeout_s, secret)
        if reason:
            result.failed_batch, result.reason = batch, reason
            say(f"batch {', '.join(batch)}: FAILED ({reason.splitlines()[0]}); rolling back")
            back = run_pyinfra(spec_file, "-y", limit=batch, deploy="rollback")
            result.rolled_back = back.returncode == 0
            if result.rolled_back:
                healthy = wait_for(queen, targets(spec, batch), time.time(), gate_timeout_s, secret)
                say(f"batch {', '.join(batch)}: rolled back" + (f", but still unhealthy: {healthy}" if healthy else ""))
            else:
                say(f"batch {', '.join(batch)}: rollback failed: {_failure(back)}")
            return result
        result.done.append(batch)
        say(f"batch {', '.join(batch)}: healthy")
    return result
