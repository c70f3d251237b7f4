"""Hive configuration: one YAML (or JSON) file per machine, validated once at start."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from rbee_runtime.common.credentials import CredentialError, is_loopback, read_credential
from rbee_runtime.common.ports import HIVE_PORT, WORKER_PORT_FIRST, WORKER_PORT_LAST
from rbee_runtime.common.tls import TlsError, TlsFiles, load_tls

_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """A model file already on disk, registered into the catalog at start (idempotently)."""

    model_id: str = Field(min_length=1)
    reference: str = Field(min_length=1)
    local_path: str = Field(min_length=1)
    sha256: str | None = None
    #: An embedding model: its workers start with ``--embedding`` and serve ``POST /v1/embeddings`` only.
    embedding: bool = False


class PlacementConfig(_Strict):
    """Workers the hive keeps running: started at boot, restarted when they crash."""

    model_id: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=0)
    slots: int | None = Field(default=None, ge=1, le=64)


def default_worker_command() -> list[str]:
    """The command that starts a worker (the hive appends the worker flags)."""
    return [sys.executable, "-m", "rbee_runtime.worker"]


class HiveConfig(_Strict):
    """Everything one hive needs; see ``docs/api.md`` (hive section).

    - ``host`` is the bind address (workers bind to it too); ``advertise_host`` (default ``host``) is
      what the hive's and its workers' URLs carry for other machines.
    - ``queen_url`` None: no heartbeats. ``credential_file``: the file holding this hive's credential (what its
      heartbeats carry and its API requires; ``$CREDENTIALS_DIRECTORY`` is systemd's ``LoadCredential=`` folder,
      see ``rbee_runtime.common.credentials``). Without one the hive and its workers are open, which only a
      loopback ``host`` allows.
    - ``data_dir`` holds ``catalog.db`` and ``logs/<worker_id>.log``.
    - ``worker_idle_timeout_s`` (0 = never) applies to workers spawned over HTTP, not to ``placements``,
      which are kept running and restarted up to ``max_restarts`` times after ``restart_backoff_s``.
    - ``health_check_interval_s``: how often the hive asks each worker's ``/health`` (activity, busy/idle).
    - ``ram_reserve_bytes`` is added to model size x 1.2 in the RAM preflight.
    - ``gpu_max_temperature_c``: no worker is placed on a GPU hotter than this (503 ``GPU_TOO_HOT``; a cooler
      GPU that fits is chosen when the spawn names no device); None: no limit.
    - ``gpu_partial_offload``: a CUDA model that does not fit in the chosen GPU's free VRAM is split, as many
      layers on the GPU as fit and the rest on the CPU (like Ollama); false: refused (507 ``VRAM_EXHAUSTED``).
    - ``tls_cert_file``/``tls_key_file``/``tls_ca_file`` (all three or none; ``$CREDENTIALS_DIRECTORY`` works
      here too): the hive and its workers serve HTTPS with that certificate, and the hive checks the queen and
      its workers against the cluster CA (``rbee_runtime.common.tls``); its URLs are ``https://``.
    - ``external_worker_drop_s``: an external worker (one the hive did not start, e.g. a systemd unit,
      registered by its ready callback) that stays unreachable this long is dropped from the registry.
    """

    hive_id: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=HIVE_PORT, ge=1, le=65535)
    advertise_host: str | None = None
    queen_url: str | None = None
    credential_file: str | None = None
    credential: str | None = Field(default=None, repr=False, exclude=True)
    data_dir: Path
    backend: Literal["cpu", "cuda", "metal"] = "cpu"
    devices: list[int] = Field(default_factory=list)
    max_workers: int = Field(default=4, ge=1)
    default_slots: int = Field(default=1, ge=1, le=64)
    ctx_size: int = Field(default=2048, ge=64)
    worker_threads: int | None = Field(default=None, ge=1)
    ram_reserve_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    gpu_max_temperature_c: int | None = Field(default=85, ge=1, le=150)
    gpu_partial_offload: bool = True
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    health_check_interval_s: float = Field(default=1.0, gt=0)
    worker_idle_timeout_s: float = Field(default=600.0, ge=0)
    loading_timeout_s: float = Field(default=120.0, gt=0)
    max_restarts: int = Field(default=3, ge=0)
    restart_backoff_s: float = Field(default=1.0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    external_worker_drop_s: float = Field(default=30.0, gt=0)
    worker_port_first: int = Field(default=WORKER_PORT_FIRST, ge=1, le=65535)
    worker_port_last: int = Field(default=WORKER_PORT_LAST, ge=1, le=65535)
    models: list[ModelConfig] = Field(default_factory=list)
    placements: list[PlacementConfig] = Field(default_factory=list)

    def is_embedding(self, model_id: str) -> bool:
        """Whether ``model_id`` is one of the configured models marked ``embedding``."""
        return any(m.embedding for m in self.models if m.model_id == model_id)
    worker_command: list[str] = Field(default_factory=default_worker_command, min_length=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    _tls: TlsFiles | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> HiveConfig:
        try:
            self._tls = load_tls(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        except TlsError as exc:
            raise ValueError(str(exc)) from exc
        if self.credential_file is not None and self.credential is None:
            try:
                self.credential = read_credential(self.credential_file, "credential_file")
            except CredentialError as exc:
                raise ValueError(str(exc)) from exc
        if self.credential is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines, so the hive needs credential_file "
                "(its credential of the cluster's internal plane; `rbee deploy` puts one in place)"
            )
        if self.worker_port_first > self.worker_port_last:
            raise ValueError(
                f"worker_port_first ({self.worker_port_first}) is above worker_port_last ({self.worker_port_last})"
            )
        if self.queen_url is not None:
            self.queen_url = self.queen_url.rstrip("/")
            if not self.queen_url.startswith(("http://", "https://")):
                raise ValueError(f"queen_url must start with http:// or https://, got {self.queen_url!r}")
        known = {m.model_id for m in self.models}
        ids = [m.model_id for m in self.models]
        if len(ids) != len(known):
            raise ValueError("models: every model_id must be unique")
        return self

    @property
    def tls(self) -> TlsFiles | None:
        """The checked TLS files (None: plain HTTP)."""
        return self._tls

    @property
    def public_host(self) -> str:
        """Address other machines use to reach this hive and its workers."""
        host = self.advertise_host or self.host
        return socket.gethostname() if host in _WILDCARD_HOSTS else host

    @property
    def local_host(self) -> str:
        """Address this machine uses to reach the hive and its workers."""
        return "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host

    @property
    def url(self) -> str:
        """Base URL of this hive as others see it."""
        return worker_url(self.public_host, self.port, self.tls is not None)

    @property
    def local_url(self) -> str:
        """Base URL of this hive from this machine (used for worker callbacks)."""
        return worker_url(self.local_host, self.port, self.tls is not None)

    @property
    def worker_credential_file(self) -> Path:
        """Where the hive keeps its workers' credential for the workers it starts (0600)."""
        return self.data_dir / "credentials" / "worker.credential"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def worker_url(host: str, port: int, tls: bool = False) -> str:
    """Base URL of a worker (or the hive) on ``host:port``; ``https`` with ``tls``."""
    return f"{'https' if tls else 'http'}://{_bracket(host)}:{port}"


def load_hive_config(path: str | Path) -> HiveConfig:
    """Read a ``HiveConfig`` from YAML or JSON; a relative ``data_dir`` is relative to the file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of hive settings, got {type(raw).__name__}")
    config = HiveConfig.model_validate(raw)
    data_dir = config.data_dir.expanduser()
    if not data_dir.is_absolute():
        data_dir = (path.parent / data_dir).resolve()
    config.data_dir = data_dir
    for model in config.models:
        local = Path(model.local_path).expanduser()
        model.local_path = str(local if local.is_absolute() else (path.parent / local).resolve())
    return config
