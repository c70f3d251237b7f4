"""The id of a deploy's release, the same on every host: ``<rbee version>-<12 hex digits>``.

The digits are a sha256 over what the deploy puts on the hosts that does not come from the host itself: the spec
file, rbee's code (its packages' files, so a changed checkout at the same version is another release), each placed
model's checksum, and digests of the queen's API keys and the cluster secret (a rotated key is a release that a
rollback must not undo silently). An unchanged deploy has the same id, and a host whose record did not change keeps
no new release (``rbee/deploys/record.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import rbee
from rbee.deploy import rbee_wheel
from rbee.deploy.cluster_secret import cluster_secret
from rbee.spec.keys import ApiKeysError, api_keys_text
from rbee.spec.models import ClusterSpec, ModelSpec
from rbee.spec.placement import assign

ModelSha = Callable[[ModelSpec], str | None]
"""A placed model's sha256 (None: not fetched, a dry run; then the spec's pinned ``sha256`` counts, which a fetch
verifies, else the model's source)."""


@cache
def rbee_version() -> str:
    """rbee's version (its package metadata, else ``rbee.__version__`` when run from a checkout not installed)."""
    try:
        return version("rbee")
    except PackageNotFoundError:
        return rbee.__version__


@cache
def code_fingerprint() -> str:
    """The fingerprint of the rbee code this control machine ships (``rbee.deploy.rbee_wheel.fingerprint``)."""
    return rbee_wheel.fingerprint()


def version_label(text: str) -> str:
    """A version as the id's first part: letters, digits and dots, at most 40, starting with one of the first two."""
    label = re.sub(r"[^0-9A-Za-z.]", ".", text)[:40] or "0"
    return label if label[0].isalnum() else f"v{label[1:]}"


def _digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def release_id(spec: ClusterSpec, spec_sha256: str, spec_dir: Path, model_sha: ModelSha) -> str:
    """The release id of deploying ``spec`` (its file's sha256 and folder given) from this control machine."""
    placed = sorted({a.model_id for a in assign(spec)})
    try:
        keys = api_keys_text(spec, spec_dir)
    except ApiKeysError:
        keys = None  # the deploy fails the queen's host for it; the id does not matter then
    inputs = {
        "spec": spec_sha256,
        "rbee": rbee_version(),
        "code": code_fingerprint(),
        "models": {m: model_sha(spec.model(m)) or spec.model(m).sha256 or spec.model(m).source for m in placed},
        "keys": _digest(keys),
        "secret": _digest(cluster_secret(spec.cluster, create=False)),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"{version_label(rbee_version())}-{digest[:12]}"
