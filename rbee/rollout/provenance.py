"""``rbee status``'s comparison: what a host's release record says it came from, against the spec at hand.

A host's record is its ``release.json`` with its ``provenance.json`` under ``"origin"`` (the commits that made the
running release; an older rbee kept them in the record itself). A commit is not a difference in what runs: it is
named among the differences only when the host runs another release than the spec at hand would make.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbee.deploy.cluster_secret import ClusterSecretError
from rbee.deploy.release_id import rbee_version
from rbee.deploy.release_record import spec_commit
from rbee.models import cached_model
from rbee.rollout.history import deploy_release_id
from rbee.spec import ClusterSpec


@dataclass(frozen=True)
class LocalInputs:
    """What deploying the spec at hand from this control machine would record (models: from the cache only)."""

    spec_sha256: str
    spec_commit: str
    spec_dirty: bool
    rbee_version: str
    release: str
    models: Mapping[str, str | None]


def local_inputs(spec: ClusterSpec, spec_file: Path) -> LocalInputs:
    """The spec at hand's side of the comparison (fetches nothing: a model not cached is its pinned ``sha256``, else
    unknown)."""
    commit, dirty = spec_commit(spec_file)
    cache = Path(spec.deploy.model_cache).expanduser()
    models = {m.id: (found.sha256 if (found := cached_model(m, cache)) else m.sha256) for m in spec.models}
    sha = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    try:
        release = deploy_release_id(spec, spec_file, fetch=False)
    except ClusterSecretError:
        release = "(unknown: $RBEE_CLUSTER_SECRET is not a cluster secret)"
    return LocalInputs(sha, commit, dirty, rbee_version(), release, models)


def _commit(commit: str, dirty: bool) -> str:
    return f"{commit[:12] or 'none'}{' (uncommitted changes)' if dirty else ''}"


def _origin(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The commits the record's release came from (``provenance.json``; an older record holds them itself)."""
    origin = record.get("origin")
    if isinstance(origin, Mapping) and origin:
        return origin
    return {"spec_commit": record.get("spec_commit"), "spec_dirty": record.get("spec_dirty"),
            "rbee_commit": record.get("git_commit")}  # fmt: skip


def compare(record: Mapping[str, Any], local: LocalInputs) -> dict[str, Any]:
    """Each provenance field of ``record`` against ``local``: ``{"release": bool, "differs": [what, ...]}``."""
    differs = []
    same_release = record.get("release") == local.release
    if record.get("spec_sha256") != local.spec_sha256:
        differs.append("spec file")
    origin = _origin(record)
    made_from = (str(origin.get("spec_commit") or ""), bool(origin.get("spec_dirty")))
    if (
        not same_release
        and origin.get("spec_commit") is not None
        and made_from != (local.spec_commit, local.spec_dirty)
    ):
        differs.append(f"spec commit {_commit(*made_from)}, here {_commit(local.spec_commit, local.spec_dirty)}")
    if "rbee_version" in record and record["rbee_version"] != local.rbee_version:
        differs.append(f"rbee {record['rbee_version']}, here {local.rbee_version}")
    models = record.get("models") or {}
    for model_id, sha in sorted(models.items()) if isinstance(models, dict) else ():
        here = local.models.get(model_id)
        if here is not None and here != sha:
            differs.append(f"model {model_id} {str(sha)[:12]}, here {here[:12]}")
    return {"release": same_release, "here": local.release, "differs": differs}


def status_lines(host: str, record: Mapping[str, Any], local: LocalInputs) -> list[str]:
    """What ``rbee status`` prints for one deployed host."""
    same = "this spec" if record.get("spec_sha256") == local.spec_sha256 else "ANOTHER spec (drift: run rbee plan)"
    origin = _origin(record)
    rbee_commit = str(origin.get("rbee_commit") or "")[:12] or "-"
    lines = [f"{host}: {same}, engine {record.get('engine') or '-'}"]
    found = compare(record, local)
    release = record.get("release")
    if release:
        verdict = "the spec at hand's" if found["release"] else f"not the spec at hand's ({found['here']})"
        lines.append(f"  release {release}: {verdict}")
        spec = _commit(str(origin.get("spec_commit") or ""), bool(origin.get("spec_dirty")))
        wheel = str(record.get("engine_wheel_sha256") or "")[:16] or "-"
        lines.append(f"  made from spec commit {spec}, rbee {record.get('rbee_version', '?')} (commit {rbee_commit})")
        lines.append(f"  engine wheel sha256 {wheel}")
    else:
        lines.append(f"  rbee commit {rbee_commit}")
    lines += [f"  differs: {what}" for what in found["differs"] if what != "spec file"]
    models = record.get("models") or {}
    for model_id, sha in models.items() if isinstance(models, dict) else ():
        lines.append(f"  model {model_id}: sha256 {str(sha)[:16]}")
    return lines
