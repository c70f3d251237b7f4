"""Step 5, services: config and systemd units from ``templates/``, enabled, started, restarted on change.

The queen and the hive are units of their own; each placed worker is an instance of the
template unit ``rbee-worker@.service``. A service restarts only when its config, its unit,
the runtime or (for a worker) its model changed; instances no longer placed are removed.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.context import host
from pyinfra.operations import files, systemd

from deploys import control
from deploys.facts import WorkerInstances, host_data
from deploys.operations import daemon_reload_if_needed, fail_host, restart_on_change
from rbee.deploy.layout import (
    API_KEYS_FILE,
    CONFIG_DIR,
    DATA_DIR,
    WORKERS_DIR,
    HostLayout,
    cuda_device,
    worker_instances,
)
from rbee.deploy.probe import HostFacts
from rbee.render import render


def _bind_host() -> str:
    return str(host.data.get("ssh_hostname") or "127.0.0.1")


def _put(name: str, text: str, dest: str, mode: str = "640") -> OperationMeta:
    user = host.data.rbee_deploy["service_user"]
    return files.put(name=name, src=io.StringIO(text), dest=dest, user="root", group=user, mode=mode)


def api_keys_text() -> str | None:
    """The queen's keys (one per line), read on the control machine from where the spec points."""
    source = host.data.rbee_queen.get("api_keys") if "rbee_queen" in host_data(host) else None
    if not source:
        return None
    if source.get("env"):
        keys = [k.strip() for k in os.environ.get(source["env"], "").split(",") if k.strip()]
    else:
        path = Path(source["file"]).expanduser()
        keys = [k.strip() for k in path.read_text().splitlines() if k.strip()] if path.is_file() else []
    return "\n".join(keys) + "\n" if keys else None


def _api_keys() -> str | None:
    keys = api_keys_text()
    if keys is None and host.data.rbee_queen.get("api_keys"):
        source = host.data.rbee_queen["api_keys"]
        where = f"environment variable {source['env']}" if source.get("env") else f"file {source['file']}"
        fail_host(name="services: queen API keys missing", reason=f"queen.api_keys: the {where} holds no key")
    return keys


@deploy("rbee services")
def services(facts: HostFacts, release: str) -> None:
    """Render and start the queen (on its host), the hive and the placed workers.

    ``release``: what identifies the installed runtime and engine. Each service restarts when the
    digest of its inputs (config, unit, release, models) differs from the one it last started with.
    """
    data = host.data
    layout = HostLayout(data.rbee_deploy["prefix"])
    backend = facts.backend_for(data.rbee_backend)
    gpus = data.rbee_gpus
    gpu_indices = [g.index for g in facts.gpus] if gpus == "all" else list(gpus)
    common = {
        **host_data(host),
        "python": layout.python,
        "service_user": data.rbee_deploy["service_user"],
        "config_dir": CONFIG_DIR,
        "workers_dir": WORKERS_DIR,
        "data_dir": DATA_DIR,
        "backend": backend,
        "gpu_indices": gpu_indices,
        "bind_host": _bind_host(),
        "advertise_host": _bind_host(),
        "loading_timeout": data.rbee_runtime["loading_timeout"],
    }
    cache = data.rbee_deploy["model_cache"]
    model_sha = {}
    for raw in data.rbee_models:
        fetched = control.model_file(raw, cache)
        model_sha[raw["id"]] = fetched.sha256 if fetched else raw["source"]
    units: list[str] = []
    wanted: list[tuple[str, str]] = []  # (service, digest of everything it starts from)

    if "queen" in data.rbee_roles:
        keys = _api_keys()
        if keys:
            _put("services: queen API keys", keys, API_KEYS_FILE, mode="640")
        context = {**common, "api_keys_env": None, "api_keys_file": API_KEYS_FILE if keys else None}
        config = render("queen.yaml.j2", context)
        _put("services: queen config", config, f"{CONFIG_DIR}/queen.yaml")
        unit = _unit("rbee-queen.service", common)
        units.append("rbee-queen.service")
        wanted.append(("rbee-queen.service", _digest(config, unit, release, keys or "")))

    instances = worker_instances(host_data(host))
    contexts = [m["context"] for m in data.rbee_models]
    hive_context = {
        **common,
        "devices": gpu_indices if backend == "cuda" else [],
        "ctx_size": max(contexts, default=2048),
        "model_paths": {m["id"]: layout.model_path(m["id"]) for m in data.rbee_models},
        "hive_placements": [],  # placed workers are systemd instances, not hive children
        "worker_port_first": max((w.port for w in instances), default=7839) + 1,
    }
    hive_config = render("hive.yaml.j2", hive_context)
    _put("services: hive config", hive_config, f"{CONFIG_DIR}/hive.yaml")
    hive_unit = _unit("rbee-hive.service", common)
    worker_unit = _unit("rbee-worker@.service", common)
    units += ["rbee-hive.service", "rbee-worker@.service"]
    wanted.append(("rbee-hive.service", _digest(hive_config, hive_unit, release, *sorted(model_sha.values()))))

    hive_url = f"http://{_bind_host()}:{data.rbee_hive['port']}"
    for worker in instances:
        model = next(m for m in data.rbee_models if m["id"] == worker.model_id)
        env = render("worker.env.j2", {
            **common, "worker": worker, "model_path": layout.model_path(worker.model_id),
            "ctx_size": model["context"], "hive_url": hive_url,
            "device": cuda_device(worker.device, gpus) if backend == "cuda" else 0,
        })  # fmt: skip
        _put(f"services: worker {worker.name} config", env, f"{WORKERS_DIR}/{worker.name}.env")
        wanted.append((worker.unit, _digest(env, worker_unit, release, model_sha[worker.model_id])))

    daemon_reload_if_needed(name="services: reload systemd units that changed", units=units)
    for service, digest in wanted:
        systemd.service(name=f"services: {service} enabled and running", service=service, running=True, enabled=True)
        restart_on_change(name=f"services: restart {service} if its inputs changed", service=service,
                          want=digest, stamp=f"{layout.stamps}/service-{service}")  # fmt: skip

    keep = {w.name for w in instances}
    for stale in host.get_fact(WorkerInstances, folder=WORKERS_DIR):
        if stale not in keep:
            systemd.service(name=f"services: stop worker {stale} (no longer placed)",
                            service=f"rbee-worker@{stale}.service", running=False, enabled=False)  # fmt: skip
            files.file(name=f"services: remove worker {stale} config", path=f"{WORKERS_DIR}/{stale}.env",
                       present=False)  # fmt: skip


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _unit(name: str, context: dict[str, Any]) -> str:
    text = render(f"systemd/{name}.j2", context)
    _put(f"services: unit {name}", text, f"/etc/systemd/system/{name}", mode="644")
    return text
