"""Step 5, services: the plan's configs and systemd units put in place, enabled, started, restarted on change.

Everything written comes from the host's plan (``rbee.deploy.host_plan``): this step only turns
it into pyinfra operations. The queen and the hive are units of their own; each placed worker is
an instance of the template unit ``rbee-worker@.service``. A service restarts only when the
digest of what it starts from (config, unit, runtime and engine, its models) differs from the
one it last started with; instances no longer placed are removed.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import files, systemd

from deploys import darwin
from deploys.facts import WorkerInstances
from deploys.operations import daemon_reload_if_needed, put_planned, restart_on_change
from rbee.deploy.host_plan import HIVE_UNIT, QUEEN_UNIT, WORKER_UNIT, HostPlan
from rbee.deploy.layout import OLD_API_KEYS_FILE, WORKERS_DIR


@deploy("rbee services")
def services(plan: HostPlan, release: str, model_sha256: Mapping[str, str]) -> None:
    """Put the plan's files in place and start the queen (on its host), the hive and the placed workers.

    ``release``: what identifies the installed runtime and engine; ``model_sha256``: each model's
    checksum (its source in a dry run that has not fetched it). A macOS host's plan holds launchd
    daemons instead: ``deploys/darwin.py`` puts them in place, with no systemd operation.
    """
    if plan.service_manager == "launchd":
        darwin.services(plan, release, model_sha256)
        return
    # One call site per kind of file: pyinfra tells operations apart by where they are called, so a
    # loop over all files would merge, say, h1's queen config with h3's hive unit in its results.
    put_planned(plan, "queen API keys")
    put_planned(plan, "cluster secret")
    put_planned(plan, "hive credential")
    put_planned(plan, "worker credential")
    put_planned(plan, "queen config")
    put_planned(plan, f"unit {QUEEN_UNIT}")
    put_planned(plan, "hive config")
    put_planned(plan, f"unit {HIVE_UNIT}")
    put_planned(plan, f"unit {WORKER_UNIT}")
    for worker in plan.workers:
        put_planned(plan, f"worker {worker.name} config")
    units = {f"unit {u}" for u in (QUEEN_UNIT, HIVE_UNIT, WORKER_UNIT)}
    kinds = {"queen API keys", "cluster secret", "hive credential", "worker credential", "queen config",
             "hive config", *units}  # fmt: skip
    if left := [f.label for f in plan.files if f.label not in kinds and not f.label.startswith("worker ")]:
        raise ValueError(f"services: the plan has files this step does not put: {left}")

    daemon_reload_if_needed(name="services: reload systemd units that changed", units=list(plan.units))
    for service in plan.services:
        systemd.service(
            name=f"services: {service.unit} enabled and running", service=service.unit, running=True, enabled=True
        )
        restart_on_change(
            name=f"services: restart {service.unit} if its inputs changed", service=service.unit,
            want=service.digest(release, model_sha256), stamp=f"{plan.layout.stamps}/service-{service.unit}",
        )  # fmt: skip

    files.file(name="services: no API keys file outside the credentials folder (an older release's)",
               path=OLD_API_KEYS_FILE, present=False)  # fmt: skip
    keep = {w.name for w in plan.workers}
    for stale in host.get_fact(WorkerInstances, folder=WORKERS_DIR):
        if stale not in keep:
            systemd.service(name=f"services: stop worker {stale} (no longer placed)",
                            service=f"rbee-worker@{stale}.service", running=False, enabled=False)  # fmt: skip
            files.file(name=f"services: remove worker {stale} config", path=f"{WORKERS_DIR}/{stale}.env",
                       present=False)  # fmt: skip
