"""The typed contexts of the shared templates (``rbee/templates/``), one dataclass per template.

A template reads exactly the fields of its context (``StrictUndefined`` catches a typo); the
host plan (``rbee.deploy.host_plan``) builds the contexts, so mypy checks what goes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rbee.render import render


def _fields(context: object) -> dict[str, Any]:
    return {f.name: getattr(context, f.name) for f in fields(context)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class QueenConfig:
    """``queen.yaml.j2``: the queen's config."""

    cluster: str
    bind_host: str
    port: int
    api_keys_env: str | None
    api_keys_file: str | None
    cluster_secret_file: str | None
    heartbeat_interval: float
    stale_timeout: float
    loading_timeout: float
    queue_max: int
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None


@dataclass(frozen=True)
class HiveModel:
    """One model of a hive's catalog."""

    model_id: str
    source: str
    local_path: str
    sha256: str | None
    embedding: bool = False


@dataclass(frozen=True)
class HivePlacement:
    """One worker a hive starts and keeps running itself (``rbee up``)."""

    model_id: str
    slots: int


@dataclass(frozen=True)
class HiveConfig:
    """``hive.yaml.j2``: a hive's config."""

    host: str
    bind_host: str
    advertise_host: str
    port: int
    queen_url: str
    credential_file: str | None
    data_dir: str
    backend: str
    devices: list[int]
    max_workers: int
    ctx_size: int
    ram_reserve_bytes: int
    heartbeat_interval: float
    worker_idle_timeout: float
    loading_timeout: float
    worker_command: list[str]
    worker_port_first: int
    models: list[HiveModel]
    placements: list[HivePlacement]
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None


@dataclass(frozen=True)
class WorkerSettings:
    """``worker.env.j2``: the settings of one placed worker (a systemd instance)."""

    worker_id: str
    model_id: str
    model_path: str
    bind_host: str
    port: int
    slots: int
    ctx_size: int
    backend: str
    device: int
    hive_url: str
    embedding: bool = False


@dataclass(frozen=True)
class UnitSettings:
    """``systemd/*.service.j2``: what the units of a host read."""

    cluster: str
    host: str
    python: str
    service_user: str
    config_dir: str
    workers_dir: str
    data_dir: str
    backend: str
    gpu_indices: list[int]
    loading_timeout: float
    library_path: str = ""
    """``LD_LIBRARY_PATH`` of the hive and workers: the CUDA runtime wheels' ``lib`` (empty: none needed)."""
    credentials_dir: str = ""
    """Where the credential files are (``LoadCredential=`` reads them as root)."""
    internal: bool = False
    """The internal plane is authenticated: each unit loads its credential."""
    hive_peers: list[str] = field(default_factory=list)
    """The only addresses the hive may exchange packets with (besides loopback); empty: no IP filtering."""
    api_keys_file: str = ""
    """The queen's keys file, loaded as its ``api-keys`` credential (empty: none, or not through systemd)."""
    tls: bool = False
    """``deploy.tls``: each unit loads the host's certificate, its key and the cluster CA (``tls.crt`` ...)."""
    log_format: str = "text"
    """``runtime.log_format``: ``json`` sets ``RBEE_LOG_FORMAT=json`` in each unit (one JSON object per log line)."""


def render_queen(config: QueenConfig) -> str:
    """The queen's ``queen.yaml``."""
    return render("queen.yaml.j2", _fields(config))


def render_hive(config: HiveConfig) -> str:
    """A hive's ``hive.yaml``."""
    return render("hive.yaml.j2", _fields(config))


def render_worker(settings: WorkerSettings) -> str:
    """A placed worker's ``<name>.env``."""
    return render("worker.env.j2", _fields(settings))


def worker_args(settings: WorkerSettings) -> list[str]:
    """The arguments of a placed worker, as a list: what ``worker.env.j2`` puts into ``RBEE_WORKER_ARGS``.

    launchd has no environment files, so a worker daemon carries them in its ``ProgramArguments``
    (``tests/deploy/test_launchd.py`` checks that both say the same).
    """
    return [
        "--worker-id", settings.worker_id, "--model-id", settings.model_id, "--model-path", settings.model_path,
        "--host", settings.bind_host, "--port", str(settings.port), "--slots", str(settings.slots),
        "--ctx-size", str(settings.ctx_size), "--backend", settings.backend, "--device", str(settings.device),
        "--callback-url", f"{settings.hive_url}/v1/workers/ready", "--managed-by", "external",
        *(["--embedding"] if settings.embedding else []),
    ]  # fmt: skip


def service_command(service: str, python: str, config_dir: str) -> list[str]:
    """What the queen's or a hive's unit runs (``ExecStart=``), as a list: ``service`` is ``queen`` or ``hive``."""
    return [python, "-m", f"rbee_runtime.{service}", "--config", f"{config_dir}/{service}.yaml"]


def render_unit(unit: str, settings: UnitSettings) -> str:
    """A systemd unit (``rbee-queen.service``, ``rbee-hive.service`` or ``rbee-worker@.service``)."""
    return render(f"systemd/{unit}.j2", _fields(settings))
