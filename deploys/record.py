"""What this deploy put on a host, recorded in ``<prefix>/release.json`` (read by ``rbee status``).

Only inputs go in (spec hash, git commit, engine build, wheelhouse and model checksums), no time
stamp: an unchanged deploy writes the same record and so changes nothing. The text is built by
``rbee.deploy.release_record`` (as on the Ansible path).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

from pyinfra.api.deploy import deploy
from pyinfra.context import host

from deploys.atomic import atomic_put
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.release_record import RECORD, release_record_text


def _spec_sha256() -> str:
    """The sha256 of the spec file this run deploys (the one the inventory read)."""
    return hashlib.sha256(Path(host.data.rbee_spec_file).read_bytes()).hexdigest()


@deploy("rbee release record")
def record(plan: HostPlan, engine_key: str | None, wheelhouse: str, checksums: Mapping[str, str | None]) -> None:
    """Write this host's release record (spec, commit, engine, wheelhouse, models)."""
    text = release_record_text(plan.cluster, plan.host, _spec_sha256(), engine_key or "", wheelhouse, checksums)
    atomic_put(name="record: release.json", src=io.StringIO(text), dest=f"{plan.layout.prefix}/{RECORD}", mode="644")
