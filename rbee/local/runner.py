"""Bring the local services up, wait until the cluster serves, and bring everything down again."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rbee.client import QueenClient, QueenError
from rbee.deploy import health
from rbee.local.plan import LocalPlan
from rbee.local.processes import ServiceProcess
from rbee.spec.placement import assign


class LocalClusterError(Exception):
    """A local service failed to start or the cluster did not become ready; says which and why."""


@dataclass(frozen=True)
class Readiness:
    """What the queen reports once the local cluster is ready."""

    hives: list[str]
    workers: list[tuple[str, str]]  # (worker id, model id)


class LocalCluster:
    """The processes of a ``LocalPlan``: started in order, stopped in reverse order."""

    def __init__(self, plan: LocalPlan, log_dir: Path, api_key: str | None = None) -> None:
        self.plan = plan
        log_format = plan.spec.runtime.log_format
        self.processes = [ServiceProcess(service, log_dir, log_format) for service in plan.services]
        self.api_key = api_key

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def _check_alive(self) -> None:
        for process in self.processes:
            code = process.exit_code()
            if code is not None:
                raise LocalClusterError(
                    f"{process.service.name} exited with status {code} during start-up "
                    f"(log: {process.log_path}):\n{process.log_tail()}"
                )

    def wait_ready(self, timeout_s: float) -> Readiness:
        """Wait until the queen sees the local hives online and every placed worker ready.

        The rule is ``rbee.deploy.health``'s; the placed workers of ``rbee up`` are the hive's own
        (``managed_by`` hive). Each poll first checks that every local process is still running.
        """
        if self.plan.queen_url is None:
            raise LocalClusterError("the queen of this spec is not on this machine; nothing to wait for here")
        local_hosts = [h.name for h in self.plan.spec.hosts if h.is_local]
        placed = Counter(a.host for a in assign(self.plan.spec))
        expected = health.Expectation({h: placed[h] for h in local_hosts}, managed_by="hive")
        with QueenClient(self.plan.queen_url, api_key=self.api_key, ca_file=self.plan.ca_file) as client:
            missing = health.wait_ready(client, expected, timeout_s, check_alive=self._check_alive, interval_s=0.2)
            if missing:
                raise LocalClusterError(f"the cluster was not ready within {timeout_s:g}s; still waiting for {missing}")
            try:
                workers = [(w.worker_id, w.model_id) for w in client.workers()]
            except QueenError as exc:
                raise LocalClusterError(f"the queen stopped answering once ready: {exc}") from exc
        return Readiness(sorted(local_hosts), workers)

    def stop(self, grace_s: float = 15.0) -> list[str]:
        """Stop every service, the last started first; nothing they started is left running.

        Returns the problems met on the way (services that had to be killed).
        """
        return [problem for process in reversed(self.processes) for problem in process.stop(grace_s)]
