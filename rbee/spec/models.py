"""The cluster spec (``cluster.yaml``) as pydantic models: one source of truth for deploy and runtime.

A minimal spec is three lines::

    cluster: home
    hosts:
      - {name: box, address: localhost}

Everything else has a default. Cross-field rules (unique names, placements that
resolve, no two services on one host:port) live in ``rbee.spec.checks``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rbee.spec.text import Address, EnvName, HostPath, LocalPath, ModelSource, UnixUser
from rbee.spec.types import VERSION_PATTERN, Device, Duration, Gpus, ModelId, Name, Port, Sha256, spec_error
from rbee_runtime.common.ports import HIVE_PORT, QUEEN_PORT

LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})
Backend = Literal["auto", "cpu", "cuda", "metal"]


class StrictModel(BaseModel):
    """Base of every spec section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SshSpec(StrictModel):
    """How the deploy reaches a host over SSH."""

    user: UnixUser = Field(default="root", description="SSH login user (sudo is used when not root).")
    port: Port = Field(default=22, description="SSH port.")
    key: LocalPath | None = Field(
        default=None,
        description="Private key path; relative paths are resolved from the spec file's folder.",
    )
    known_hosts_file: LocalPath | None = Field(
        default=None, description="known_hosts file to check host keys against (default: the user's)."
    )


class HiveSpec(StrictModel):
    """The hive service of a host."""

    port: Port = Field(default=HIVE_PORT, description="Port the hive listens on.")
    max_workers: int = Field(default=4, ge=1, le=64, description="Most workers this hive runs at once.")


class ReserveSpec(StrictModel):
    """Memory kept free for the host's other work; workers never plan to use it."""

    ram: ByteSize = Field(default=ByteSize(512 * 1024**2), description="RAM to keep free, e.g. 2GiB.")
    vram: ByteSize = Field(default=ByteSize(0), description="VRAM to keep free on each GPU, e.g. 512MiB.")


class HostSpec(StrictModel):
    """One machine: it runs a hive (and the queen, if ``queen.host`` names it)."""

    name: Name = Field(description="Unique DNS-safe name of the host.")
    address: Address = Field(description="SSH address (name or IP); localhost means this machine.")
    ssh: SshSpec = Field(default_factory=SshSpec)
    backend: Backend = Field(default="auto", description="auto detects CUDA/Metal at preflight, else cpu.")
    gpus: Gpus = Field(default="all", description="GPU indices the workers may use, or 'all'.")
    labels: list[Name] = Field(default_factory=list, description="Free labels that placements can select.")
    hive: HiveSpec = Field(default_factory=HiveSpec)
    reserve: ReserveSpec = Field(default_factory=ReserveSpec)

    @property
    def is_local(self) -> bool:
        """True when the host is this machine (no SSH needed)."""
        return self.address in LOCAL_ADDRESSES


class ApiKeysSpec(StrictModel):
    """Where the queen's API keys come from: an environment variable or a file, never the spec itself."""

    env: EnvName | None = Field(default=None, description="Env var with comma-separated keys.")
    file: LocalPath | None = Field(default=None, description="File with one key per line (mode 0600).")

    @model_validator(mode="after")
    def _exactly_one(self) -> ApiKeysSpec:
        if (self.env is None) == (self.file is None):
            raise spec_error(
                "give exactly one of env or file",
                "write api_keys: {env: RBEE_API_KEYS} or api_keys: {file: /etc/rbee/api-keys}",
            )
        return self


class QueenSpec(StrictModel):
    """The queen: the cluster's public, OpenAI-compatible endpoint."""

    host: Name | None = Field(default=None, description="Name of the host that runs it (default: first host).")
    port: Port = Field(default=QUEEN_PORT, description="Port of the public API.")
    api_keys: ApiKeysSpec | None = Field(default=None, description="Require these Bearer keys on the API.")
    queue_max: int = Field(default=64, ge=1, le=100_000, description="Requests waiting per model, at most.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _no_inline_keys(cls, value: Any) -> Any:
        if isinstance(value, str | list):
            raise spec_error(
                "API keys may not be written in the spec",
                "put them in an env var or a file: api_keys: {env: RBEE_API_KEYS}",
            )
        return value


class ModelSpec(StrictModel):
    """A model the cluster can serve."""

    id: ModelId = Field(description="Name clients ask for (the OpenAI 'model').")
    source: ModelSource = Field(description="hf:OWNER/REPO/FILE.gguf, file:///abs/path.gguf or https://...")
    sha256: Sha256 | None = Field(default=None, description="Expected sha256 of the file (verified).")
    context: int = Field(default=2048, ge=64, le=1_048_576, description="Context size (tokens) of a slot.")
    embedding: bool = Field(
        default=False, description="An embedding model: its workers serve POST /v1/embeddings only (no completions)."
    )


class PlacementSpec(StrictModel):
    """Where a model runs: on named hosts and/or hosts with labels (all hosts when neither is given)."""

    model: ModelId = Field(description="A model id from models.")
    hosts: list[Name] = Field(default_factory=list, description="Host names to run it on.")
    labels: list[Name] = Field(default_factory=list, description="Run it on hosts with any of these labels.")
    replicas: int = Field(default=1, ge=1, le=256, description="Workers to keep running, one per host.")
    slots: int = Field(default=1, ge=1, le=64, description="Concurrent requests per worker.")
    device: Device = Field(default="auto", description="auto, cpu, metal, cuda or cuda:N.")


class RuntimeSpec(StrictModel):
    """Timings of the running cluster."""

    heartbeat_interval: Duration = Field(default=5.0, description="Hive → queen heartbeat period.")
    stale_timeout: Duration = Field(default=30.0, description="A hive without heartbeat this long is stale.")
    worker_idle_timeout: Duration = Field(
        default=600.0, description="Stop an unplaced worker idle this long (0 = never)."
    )
    loading_timeout: Duration = Field(default=300.0, description="A worker must load its model within this.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines of queen, hives and workers: text, or json (one object per line)."
    )

    @field_validator("stale_timeout")
    @classmethod
    def _stale_after_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("heartbeat_interval")
        if heartbeat is not None and value < 2 * heartbeat:
            raise spec_error(
                "stale_timeout must be at least twice heartbeat_interval",
                f"raise stale_timeout to {2 * heartbeat:g}s or more",
            )
        return value


class DeploySpec(StrictModel):
    """How the deploy installs rbee on the hosts."""

    prefix: HostPath = Field(default="/opt/rbee", description="Install prefix (absolute).")
    service_user: UnixUser = Field(default="rbee", description="System user the services run as.")
    llama_cpp_python: str = Field(
        default="0.3.36", pattern=VERSION_PATTERN, description="llama-cpp-python version to build."
    )
    build_cache: LocalPath = Field(default="~/.cache/rbee/wheels", description="Engine wheel cache (control machine).")
    model_cache: LocalPath = Field(
        default="~/.cache/rbee/models", description="Model download cache (control machine)."
    )
    on_unreachable: Literal["continue", "stop"] = Field(
        default="continue", description="An unreachable host: deploy the others, or stop."
    )
    builders: list[Name] = Field(
        default_factory=list,
        description=(
            "Hosts preferred for building engines the control machine cannot build (another OS, arch, Python, "
            "libc or a GPU backend); by default the first host of each feature set builds it."
        ),
    )
    keep_releases: int = Field(
        default=5, ge=1, le=50,
        description=(
            "Releases kept on each host for rbee rollback (the current one included; older ones are pruned, their "
            "model files freed)."
        ),
    )  # fmt: skip
    tls: bool = Field(
        default=False,
        description=(
            "Encrypt the internal plane and the queen's port with TLS: the deploy makes a cluster CA on the control "
            "machine and a certificate per host; clients then trust that CA (docs/security.md, TLS)."
        ),
    )


class ClusterSpec(StrictModel):
    """The whole cluster: hosts, the queen, models and where they run."""

    model_config = ConfigDict(
        extra="forbid", title="rbee cluster spec", json_schema_extra={"$id": "https://rbee.dev/cluster.schema.json"}
    )

    version: Literal[1] = Field(default=1, description="Spec format version.")
    cluster: Name = Field(description="Name of the cluster.")
    queen: QueenSpec = Field(default_factory=QueenSpec)
    hosts: list[HostSpec] = Field(min_length=1, description="The machines of the cluster.")
    models: list[ModelSpec] = Field(default_factory=list)
    placements: list[PlacementSpec] = Field(default_factory=list)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)

    @property
    def queen_host(self) -> HostSpec:
        """The host that runs the queen."""
        wanted = self.queen.host or self.hosts[0].name
        return next(h for h in self.hosts if h.name == wanted)

    def host(self, name: str) -> HostSpec:
        """The host called ``name``."""
        return next(h for h in self.hosts if h.name == name)

    def model(self, model_id: str) -> ModelSpec:
        """The model called ``model_id``."""
        return next(m for m in self.models if m.id == model_id)
