"""What this deploy put on a host, recorded in ``<prefix>/release.json`` (read by ``rbee status``).

Only inputs go in (spec hash, git commit, engine build, wheelhouse and model checksums), no time
stamp: an unchanged deploy writes the same record and so changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import files

from deploys import control
from rbee.deploy.layout import HostLayout
from rbee.deploy.wheelhouse import project_root

RECORD = "release.json"


def _spec_sha256() -> str:
    spec = os.environ.get("RBEE_SPEC")
    return hashlib.sha256(Path(spec).read_bytes()).hexdigest() if spec and Path(spec).is_file() else ""


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


@deploy("rbee release record")
def record(engine_key: str | None, wheelhouse: str) -> None:
    """Write this host's release record (spec, commit, engine, wheelhouse, models)."""
    layout = HostLayout(host.data.rbee_deploy["prefix"])
    cache = host.data.rbee_deploy["model_cache"]
    models = {}
    for raw in host.data.rbee_models:
        fetched = control.model_file(raw, cache)
        models[raw["id"]] = fetched.sha256 if fetched else "(not fetched: dry run)"
    content = {
        "cluster": host.data.rbee_cluster,
        "host": host.data.rbee_host,
        "spec_sha256": _spec_sha256(),
        "git_commit": _git_commit(),
        "engine": engine_key or "",
        "wheelhouse": wheelhouse,
        "models": models,
    }
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    files.put(name="record: release.json", src=io.StringIO(text), dest=f"{layout.prefix}/{RECORD}", mode="644")
