"""What this deploy put on a host, recorded in ``<prefix>/release.json`` (read by ``rbee status``).

Only inputs go in (spec hash, git commit, engine build, wheelhouse and model checksums), no time
stamp: an unchanged deploy writes the same record and so changes nothing. The text is built by
``rbee.deploy.release_record`` (as on the Ansible path).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import files

from deploys import control
from rbee.deploy.layout import HostLayout
from rbee.deploy.release_record import RECORD, release_record_text


def _spec_sha256() -> str:
    spec = os.environ.get("RBEE_SPEC")
    return hashlib.sha256(Path(spec).read_bytes()).hexdigest() if spec and Path(spec).is_file() else ""


@deploy("rbee release record")
def record(engine_key: str | None, wheelhouse: str) -> None:
    """Write this host's release record (spec, commit, engine, wheelhouse, models)."""
    layout = HostLayout(host.data.rbee_deploy["prefix"])
    cache = host.data.rbee_deploy["model_cache"]
    models: dict[str, str | None] = {}
    for raw in host.data.rbee_models:
        fetched = control.model_file(raw, cache)
        models[raw["id"]] = fetched.sha256 if fetched else None
    text = release_record_text(
        host.data.rbee_cluster, host.data.rbee_host, _spec_sha256(), engine_key or "", wheelhouse, models
    )
    files.put(name="record: release.json", src=io.StringIO(text), dest=f"{layout.prefix}/{RECORD}", mode="644")
