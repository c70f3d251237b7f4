"""Decide what ``rbee up`` runs on this machine and render its configuration files."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbee.engine.detect import local_backend
from rbee.render import render
from rbee.spec import ClusterSpec, ModelSpec, parse_spec
from rbee.spec.inventory import inventory_groups
from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.ports import WORKER_PORT_FIRST


class LocalPlanError(Exception):
    """The spec cannot run here; the message says why and what to do."""


def default_spec_text(tiny_model: Path, queen_port: int, hive_port: int) -> str:
    """The embedded default: one node on this machine serving the project's tiny model."""
    return f"""\
cluster: local
queen: {{port: {queen_port}}}
hosts:
  - name: local
    address: localhost
    backend: cpu
    hive: {{port: {hive_port}, max_workers: 2}}
models:
  - id: {TINY_MODEL_ID}
    source: file://{tiny_model}
    context: 512
placements:
  - model: {TINY_MODEL_ID}
    slots: 2
runtime:
  heartbeat_interval: 1s
  stale_timeout: 5s
  worker_idle_timeout: 10m
  loading_timeout: 60s
"""


def default_spec(tiny_model: Path, queen_port: int, hive_port: int) -> ClusterSpec:
    """The embedded default spec, validated like any other."""
    return parse_spec(default_spec_text(tiny_model, queen_port, hive_port), "<embedded default>")


@dataclass(frozen=True)
class LocalService:
    """One service ``rbee up`` starts: its kind, config file and URL."""

    name: str
    kind: str  # "queen" | "hive"
    config: Path
    url: str


@dataclass(frozen=True)
class LocalPlan:
    """What runs here: services in start order (the queen first)."""

    spec: ClusterSpec
    services: list[LocalService]
    queen_url: str | None


def model_path(model: ModelSpec, model_cache: Path) -> Path:
    """Where a model's file is on this machine."""
    if model.source.startswith("file://"):
        return Path(model.source.removeprefix("file://"))
    return model_cache.expanduser() / f"{model.id}.gguf"


def _model_paths(spec: ClusterSpec, wanted: list[dict[str, Any]]) -> dict[str, str]:
    paths = {}
    for entry in wanted:
        model = spec.model(entry["id"])
        path = model_path(model, Path(spec.deploy.model_cache))
        if not path.is_file():
            raise LocalPlanError(
                f"model {model.id}: its file is not on this machine ({path}); "
                "use a file:// source, or fetch it into the model cache first"
            )
        paths[model.id] = str(path)
    return paths


def plan_local(spec: ClusterSpec, base_dir: Path, run_dir: Path) -> LocalPlan:
    """Render the configs of the spec's local hosts (address localhost) under ``run_dir``."""
    local = [h for h in spec.hosts if h.is_local]
    if not local:
        raise LocalPlanError(
            "no host of this spec is this machine (address: localhost); "
            "add one, or deploy the spec with pyinfra instead"
        )
    groups = dict(inventory_groups(spec, base_dir)["hives"])
    entries = {data["rbee_host"]: data for data in groups.values()}
    run_dir.mkdir(parents=True, exist_ok=True)
    services: list[LocalService] = []
    queen = spec.queen_host
    queen_url = f"http://127.0.0.1:{spec.queen.port}" if queen.is_local else None
    if queen.is_local:
        path = run_dir / "queen.yaml"
        keys = spec.queen.api_keys
        keys_file = str((base_dir / Path(keys.file).expanduser()).resolve()) if keys and keys.file else None
        context = {
            **entries[queen.name],
            "bind_host": "127.0.0.1",
            "api_keys_env": keys.env if keys else None,
            "api_keys_file": keys_file,
        }
        path.write_text(render("queen.yaml.j2", context))
        services.append(LocalService("queen", "queen", path, f"http://127.0.0.1:{spec.queen.port}"))
    for host in local:
        data = entries[host.name]
        contexts = [m["context"] for m in data["rbee_models"]]
        backend = local_backend() if host.backend == "auto" else host.backend
        context = {
            **data,
            "bind_host": "127.0.0.1",
            "advertise_host": "127.0.0.1",
            "worker_port_first": WORKER_PORT_FIRST,
            "hive_placements": data["rbee_placements"],
            "data_dir": str(run_dir / "hives" / host.name),
            "backend": backend,
            "devices": [] if host.gpus == "all" or backend == "cpu" else host.gpus,
            "ctx_size": max(contexts, default=2048),
            "python": sys.executable,
            "model_paths": _model_paths(spec, data["rbee_models"]),
        }
        path = run_dir / f"hive-{host.name}.yaml"
        path.write_text(render("hive.yaml.j2", context))
        services.append(LocalService(f"hive {host.name}", "hive", path, f"http://127.0.0.1:{host.hive.port}"))
    return LocalPlan(spec, services, queen_url)
