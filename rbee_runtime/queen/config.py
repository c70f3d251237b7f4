"""Configuration of the queen (``queen.yaml``) and its loader.

API keys are never written in the file: it names where they come from (``api_keys_env``: an
environment variable holding comma-separated keys, ``api_keys_file``: a file with one key per
line), and :func:`load_queen_config` resolves them into :attr:`QueenConfig.api_keys`. The same holds
for the cluster secret of the internal plane (``cluster_secret_file``, see
:mod:`rbee_runtime.common.credentials`); ``$CREDENTIALS_DIRECTORY`` in a path is systemd's
``LoadCredential=`` folder. ``tls_cert_file``/``tls_key_file``/``tls_ca_file`` (all three or none, see
:mod:`rbee_runtime.common.tls`): the queen serves HTTPS and checks hives and workers against the CA.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rbee_runtime.common.credentials import CredentialError, credential_path, is_loopback, read_credential
from rbee_runtime.common.ports import QUEEN_PORT
from rbee_runtime.common.tls import TlsError, TlsFiles, load_tls


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says what to change."""


class QueenConfig(BaseModel):
    """Settings of one queen process (all durations in seconds)."""

    model_config = ConfigDict(extra="forbid")

    queen_id: str = Field(default="queen", min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=QUEEN_PORT, ge=1, le=65535)
    api_keys: list[str] = Field(default_factory=list, description="Accepted Bearer keys; empty = no auth.")
    cluster_secret: str | None = Field(
        default=None, repr=False,
        description="Secret of the internal plane (heartbeats, hive and worker APIs); None: open, loopback only.",
    )  # fmt: skip
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="Interval the hives are asked to use.")
    stale_timeout_s: float = Field(default=15.0, gt=0, description="No heartbeat for this long → stale.")
    loading_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for a started worker.")
    queue_max: int = Field(default=16, ge=1, description="Most requests waiting per model.")
    queue_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait in the queue.")
    request_timeout_s: float = Field(default=300.0, gt=0, description="Longest silence of a worker stream.")
    max_failover_attempts: int = Field(default=2, ge=0, description="Retries on other workers.")
    default_max_tokens: int = Field(default=256, ge=1, le=8192, description="When a request gives none.")
    spawn_poll_interval_s: float = Field(default=0.25, gt=0, description="Poll interval of a starting worker.")
    log_level: str = "info"
    tls_cert_file: str | None = Field(default=None, description="Certificate served (PEM); with TLS only.")
    tls_key_file: str | None = Field(default=None, description="Its private key (PEM).")
    tls_ca_file: str | None = Field(default=None, description="The cluster CA: hives and workers must chain to it.")

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files (checked when the config was loaded); None: plain HTTP."""
        if not (self.tls_cert_file and self.tls_key_file and self.tls_ca_file):
            return None
        return TlsFiles(Path(self.tls_cert_file), Path(self.tls_key_file), Path(self.tls_ca_file))

    @model_validator(mode="after")
    def _check(self) -> QueenConfig:
        if any(not key.strip() for key in self.api_keys):
            raise ValueError("api_keys must not contain empty keys")
        if self.cluster_secret is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines, so the internal plane needs "
                "cluster_secret_file (a file holding the cluster secret; `rbee deploy` and `rbee up` make one)"
            )
        if self.stale_timeout_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"stale_timeout_s ({self.stale_timeout_s}) must be longer than "
                f"heartbeat_interval_s ({self.heartbeat_interval_s})"
            )
        return self


def _keys_from_env(name: str) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"api_keys_env names the environment variable {name!r}, which is not set")
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"the environment variable {name!r} (api_keys_env) holds no key")
    return keys


def _keys_from_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"api_keys_file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ConfigError(f"api_keys_file {str(path)!r} holds no key (one key per line)")
    return keys


def _config_path(name: str, value: object, base_dir: Path | None) -> Path:
    """The file a setting names: ``$CREDENTIALS_DIRECTORY`` expanded, relative to ``base_dir``."""
    try:
        path = credential_path(str(value))
    except CredentialError as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    return base_dir / path if not path.is_absolute() and base_dir is not None else path


def _resolve_tls(data: dict[str, Any], base_dir: Path | None) -> None:
    """Check the TLS files of ``data`` and replace their names by their resolved paths."""
    names = ("tls_cert_file", "tls_key_file", "tls_ca_file")
    paths: list[Path | None] = []
    for name in names:
        value = data.get(name)
        paths.append(_config_path(name, value, base_dir) if value else None)
    try:
        files = load_tls(*paths)
    except TlsError as exc:
        raise ConfigError(str(exc)) from exc
    if files is not None:
        data.update(zip(names, (str(files.cert_file), str(files.key_file), str(files.ca_file)), strict=True))


def resolve_config(data: dict[str, Any], base_dir: Path | None = None) -> QueenConfig:
    """Build a :class:`QueenConfig` from parsed file content, resolving the API key sources."""
    data = dict(data)
    if "api_keys" in data:
        raise ConfigError(
            "api_keys must not be written in the config file; "
            "use api_keys_env: VAR (comma-separated keys) or api_keys_file: PATH (one key per line)"
        )
    if "cluster_secret" in data:
        raise ConfigError("cluster_secret must not be written in the config file; use cluster_secret_file: PATH")
    secret_file = data.pop("cluster_secret_file", None)
    if secret_file:
        path = _config_path("cluster_secret_file", secret_file, base_dir)
        try:
            data["cluster_secret"] = read_credential(path, "cluster_secret_file")
        except CredentialError as exc:
            raise ConfigError(str(exc)) from exc
    _resolve_tls(data, base_dir)
    keys: list[str] = []
    env_name = data.pop("api_keys_env", None)
    file_name = data.pop("api_keys_file", None)
    if env_name:
        keys += _keys_from_env(str(env_name))
    if file_name:
        keys += _keys_from_file(_config_path("api_keys_file", file_name, base_dir))
    data["api_keys"] = list(dict.fromkeys(keys))
    try:
        return QueenConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid queen config: {problems}") from exc


def load_queen_config(path: str | Path) -> QueenConfig:
    """Read a YAML (or JSON) queen config file and resolve its API key sources."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read queen config {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"queen config {str(path)!r} is not valid YAML/JSON: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"queen config {str(path)!r} must be a mapping of settings")
    return resolve_config(data, base_dir=path.parent)
