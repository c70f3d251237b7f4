"""Step 5, services: the plan's configs and systemd units put in place, enabled, started, restarted on change.

Everything written comes from the host's plan (``rbee.deploy.host_plan``): this step only turns
it into pyinfra operations. The queen and the hive are units of their own; each placed worker is
an instance of the template unit ``rbee-worker@.service``. A service restarts only when the
digest of what it starts from (config, unit, runtime and engine, its models) differs from the
one it last started with; instances no longer placed are removed, and so are model files no placement of the host
needs any more (before the hive restarts with its new config; a worker still mapping one keeps its pages).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from pyinfra.api.deploy import deploy
from pyinfra.operations import files, server, systemd

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HIVE_UNIT, QUEEN_UNIT, WORKER_UNIT, HostPlan
from rbee.deploy.host_state import upload_stamp
from rbee.deploy.layout import OLD_API_KEYS_FILE, WORKERS_DIR
from rbee.deploys import darwin
from rbee.deploys.operations import (
    CONFIG_FILES,
    daemon_reload,
    put_planned,
    put_planned_files,
    service_state,
    settle_units,
)

SETTLE_TIMEOUT_S = 300
"""How long a deploy waits for its (re)started units at most; the health gate waits for the rest."""


@deploy("rbee services")
def services(plan: HostPlan, changes: Changes, release: str, model_sha256: Mapping[str, str]) -> None:
    """Put the plan's files in place and start the queen (on its host), the hive and the placed workers.

    ``changes``: what the preflight's diff found different (only that is done); ``release``: what identifies
    the installed runtime and engine; ``model_sha256``: each model's checksum (its source in a dry run that
    has not fetched it). A macOS host's plan holds launchd daemons instead: ``rbee/deploys/darwin.py`` puts them
    in place, with no systemd operation.
    """
    if models_gone := [c.target for c in changes.of("remove-model")]:
        gone = [*models_gone, *(upload_stamp(plan.layout, path) for path in models_gone)]  # and their upload stamps
        server.shell(name=f"services: remove {len(models_gone)} model file(s) no longer placed",
                     commands=[f"rm -f {' '.join(shlex.quote(p) for p in gone)}"])  # fmt: skip
    if plan.service_manager == "launchd":
        darwin.services(plan, changes, release, model_sha256)
        return
    units = tuple(f"unit {u}" for u in (QUEEN_UNIT, HIVE_UNIT, WORKER_UNIT))
    put_planned_files(plan, changes, (*CONFIG_FILES, *units), put_elsewhere="worker ")
    for worker in plan.workers:
        put_planned(plan, f"worker {worker.name} config", changes)

    if changes.has("daemon-reload"):
        daemon_reload(name="services: reload systemd units that changed")
    started = False
    for service in plan.services:
        enable, start = changes.has("enable", service.unit), changes.has("start", service.unit)
        restart = changes.has("restart", service.unit)
        if enable or start or restart:
            service_state(
                name=f"services: {service.unit} enabled, running its inputs", service=service.unit,
                enable=enable, start=start, restart=restart, want=service.digest(release, model_sha256),
                stamp=f"{plan.layout.stamps}/service-{service.unit}",
            )  # fmt: skip
            started = started or start or restart
    if started:
        settle_units(name="services: wait until the (re)started units are up or failed", timeout_s=SETTLE_TIMEOUT_S)

    if changes.has("remove-file", OLD_API_KEYS_FILE):
        files.file(name="services: no API keys file outside the credentials folder (an older release's)",
                   path=OLD_API_KEYS_FILE, present=False)  # fmt: skip
    for stale in changes.of("remove-worker"):
        systemd.service(name=f"services: stop worker {stale.target} (no longer placed)",
                        service=f"rbee-worker@{stale.target}.service", running=False, enabled=False)  # fmt: skip
        files.file(name=f"services: remove worker {stale.target} config", path=f"{WORKERS_DIR}/{stale.target}.env",
                   present=False)  # fmt: skip
