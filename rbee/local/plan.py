"""Decide what ``rbee up`` runs on this machine: the host plan (``rbee.deploy.host_plan``) of each
local host with ``rbee up``'s target (processes here, configs in the run folder), its files written."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rbee.deploy.cluster_ca import CA_CERT_NAME, ephemeral_tls
from rbee.deploy.host_plan import HostPlan, PlannedFile, Target, plan_host
from rbee.deploy.probe import PROBE_SCRIPT, HostFacts, parse_probe
from rbee.spec import ClusterSpec, ModelSpec, parse_spec
from rbee.spec.models import HostSpec
from rbee.spec.placement import models_on
from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.credentials import new_cluster_secret, write_credential


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
    """What runs here: services in start order (the queen first); ``ca_file``: the run's CA (``deploy.tls``)."""

    spec: ClusterSpec
    services: list[LocalService]
    queen_url: str | None
    hosts: tuple[HostPlan, ...] = ()
    ca_file: Path | None = None


def model_path(model: ModelSpec, model_cache: Path) -> Path:
    """Where a model's file is on this machine."""
    if model.source.startswith("file://"):
        return Path(model.source.removeprefix("file://"))
    return model_cache.expanduser() / f"{model.id}.gguf"


def _model_paths(spec: ClusterSpec, host: HostSpec) -> dict[str, str]:
    paths = {}
    for model_id in models_on(spec, host.name):
        model = spec.model(model_id)
        path = model_path(model, Path(spec.deploy.model_cache))
        if not path.is_file():
            raise LocalPlanError(
                f"model {model.id}: its file is not on this machine ({path}); "
                "use a file:// source, or fetch it into the model cache first"
            )
        paths[model.id] = str(path)
    return paths


def local_facts() -> HostFacts:
    """This machine, probed with the deploy's own probe script (OS, arch, Python, RAM, GPUs)."""
    done = subprocess.run(["sh", "-c", PROBE_SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    return parse_probe(done.stdout)


def local_target(spec: ClusterSpec, host: HostSpec, base_dir: Path, run_dir: Path) -> Target:
    """``rbee up``'s way of running a host: processes here, configs under ``run_dir``, the hive spawns workers."""
    keys = spec.queen.api_keys
    return Target(
        python=sys.executable,
        config_dir=str(run_dir),
        workers_dir=str(run_dir / "workers"),
        data_dir=str(run_dir / "hives" / host.name),
        bind_host="127.0.0.1",
        placed_workers="hive",
        model_paths=_model_paths(spec, host),
        api_keys_file=str((base_dir / Path(keys.file).expanduser()).resolve()) if keys and keys.file else None,
        api_keys_env=keys.env if keys else None,
        credentials_dir=str(run_dir / "credentials"),
    )


def write_planned(planned: PlannedFile) -> None:
    """Write a planned file; a secret one (a credential) readable by this user only, from its first byte."""
    path = Path(planned.path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if planned.secret else 0o777)
    if planned.secret:
        write_credential(path, planned.text.strip())
    else:
        path.write_text(planned.text)


def plan_local(spec: ClusterSpec, base_dir: Path, run_dir: Path, facts: HostFacts | None = None) -> LocalPlan:
    """Plan the spec's local hosts (address localhost) and write their configs under ``run_dir``.

    Each run makes a fresh cluster secret: its services authenticate to each other like a deployed cluster's.
    With ``deploy.tls`` it also makes a fresh CA (its key never written) and one certificate for
    ``127.0.0.1``/``localhost``: every service serves HTTPS, and clients trust ``<run>/credentials/ca.crt``.
    """
    local = [h for h in spec.hosts if h.is_local]
    if not local:
        raise LocalPlanError(
            "no host of this spec is this machine (address: localhost); "
            "add one, or deploy the spec with pyinfra instead"
        )
    facts = facts or local_facts()
    run_dir.mkdir(parents=True, exist_ok=True)
    services: list[LocalService] = []
    queen = spec.queen_host
    scheme = "https" if spec.deploy.tls else "http"
    queen_url = f"{scheme}://127.0.0.1:{spec.queen.port}" if queen.is_local else None
    secret = new_cluster_secret()
    tls = ephemeral_tls(spec.cluster) if spec.deploy.tls else None
    plans = [
        plan_host(spec, h.name, facts, local_target(spec, h, base_dir, run_dir), cluster_secret=secret, tls=tls)
        for h in local
    ]
    for plan in plans:
        for planned in plan.files:
            write_planned(planned)
        if plan.is_queen:
            config = Path(plan.file(f"{run_dir}/queen.yaml").path)
            services.append(LocalService("queen", "queen", config, f"{scheme}://127.0.0.1:{spec.queen.port}"))
    for host, plan in zip(local, plans, strict=True):
        config = Path(plan.file(f"{run_dir}/hive-{host.name}.yaml").path)
        services.append(LocalService(f"hive {host.name}", "hive", config, f"{scheme}://127.0.0.1:{host.hive.port}"))
    ca_file = run_dir / "credentials" / CA_CERT_NAME if tls else None
    return LocalPlan(spec, services, queen_url, tuple(plans), ca_file)
