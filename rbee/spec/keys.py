"""The queen's API keys as the control machine reads them from where the spec points (env var or file)."""

from __future__ import annotations

import os
from pathlib import Path

from rbee.spec.models import ClusterSpec


class ApiKeysError(Exception):
    """The spec names a key source that holds no key (or cannot be read)."""


def api_keys(spec: ClusterSpec, base_dir: Path) -> list[str]:
    """The queen's API keys, read from where the spec points (empty when the API is open).

    Raises ``ApiKeysError`` when the spec names a source that holds no key.
    """
    source = spec.queen.api_keys
    if source is None:
        return []
    if source.env is not None:
        keys = os.environ.get(source.env, "")
        where = f"environment variable {source.env}"
    else:
        path = Path(str(source.file)).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            keys = ",".join(path.read_text(encoding="utf-8").splitlines())
        except OSError as exc:
            raise ApiKeysError(f"queen.api_keys: cannot read {path}: {exc.strerror or exc}") from exc
        where = f"file {path}"
    found = [k.strip() for k in keys.split(",") if k.strip() and not k.strip().startswith("#")]
    if not found:
        raise ApiKeysError(f"queen.api_keys: the {where} holds no key")
    return found


def first_api_key(spec: ClusterSpec, base_dir: Path) -> str | None:
    """One of the queen's API keys (``None`` when the API is open)."""
    keys = api_keys(spec, base_dir)
    return keys[0] if keys else None


def api_keys_text(spec: ClusterSpec, base_dir: Path) -> str | None:
    """The keys as the queen's key file holds them, one per line (``None`` when the API is open)."""
    keys = api_keys(spec, base_dir)
    return "\n".join(keys) + "\n" if keys else None
