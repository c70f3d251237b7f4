"""Bring the local services up, wait until the cluster serves, and bring everything down again."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rbee.client import QueenClient, QueenError
from rbee.local.plan import LocalPlan
from rbee.local.processes import ServiceProcess
from rbee.spec.placement import assign
from rbee_runtime.common.contracts import WorkerState


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
        self.processes = [ServiceProcess(service, log_dir) for service in plan.services]
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
        """Wait until the queen answers, sees the local hives online and every placed worker idle."""
        if self.plan.queen_url is None:
            raise LocalClusterError("the queen of this spec is not on this machine; nothing to wait for here")
        local_hosts = {h.name for h in self.plan.spec.hosts if h.is_local}
        placed = [a for a in assign(self.plan.spec) if a.host in local_hosts]
        deadline = time.monotonic() + timeout_s
        missing = "the queen's health check"
        with QueenClient(self.plan.queen_url, api_key=self.api_key) as client:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    missing = self._missing(client, local_hosts, len(placed))
                except QueenError as exc:
                    missing = f"the queen ({exc})"
                if not missing:
                    workers = [(w.worker_id, w.model_id) for w in client.workers()]
                    return Readiness(sorted(local_hosts), workers)
                time.sleep(0.2)
        raise LocalClusterError(f"the cluster was not ready within {timeout_s:g}s; still waiting for {missing}")

    @staticmethod
    def _missing(client: QueenClient, local_hosts: set[str], placed: int) -> str:
        if not client.healthy():
            return "the queen's health check"
        online = {h.hive_id for h in client.hives() if h.status == "online"}
        if local_hosts - online:
            return f"hive(s) {', '.join(sorted(local_hosts - online))} to register with the queen"
        idle = [w for w in client.workers() if w.hive_id in local_hosts and w.state == WorkerState.IDLE]
        if len(idle) < placed:
            return f"placed workers to load their model ({len(idle)}/{placed} ready)"
        return ""

    def stop(self, grace_s: float = 15.0) -> list[str]:
        """Stop every service, the last started first; nothing they started is left running.

        Returns the problems met on the way (services that had to be killed).
        """
        return [problem for process in reversed(self.processes) for problem in process.stop(grace_s)]
