"""What a deploy put on a host, as the text of ``<prefix>/release.json`` (read by ``rbee status``), and where
the release came from, as ``provenance.json`` beside it.

The record is built here once for the pyinfra deploy (``rbee/deploys/record.py``) and the Ansible path
(``rbee.deploy.ansible_steps``). Only what the release is goes in (spec hash, engine build, wheelhouse and model
checksums, the release id), no time stamp and no commit: an unchanged deploy writes the same record, byte for
byte, whatever the commit it runs from (a commit that changes neither the spec nor rbee's code is no change).

The commits (``origin``: rbee's checkout and the spec's) are written only when a release is kept, into
``releases/<id>/provenance.json`` and the live ``<prefix>/provenance.json`` (``rbee.deploy.host_releases``): they
say which commit *made* the running release, and the deploy's diff never compares them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from rbee.deploy.rbee_wheel import source_tree

RECORD = "release.json"
"""The record's file name, in the host's prefix."""

PROVENANCE = "provenance.json"
"""Where the running release came from (the commits), beside the record; written only when a release is kept."""

NOT_FETCHED = "(not fetched: dry run)"
"""A model's checksum when it is not in the control machine's cache (a dry run)."""


def git_commit() -> str:
    """The commit of the rbee checkout that deploys ("" for an installed rbee, or outside a git checkout)."""
    tree = source_tree()
    if tree is None:
        return ""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def release_record_text(
    cluster: str,
    host: str,
    spec_sha256: str,
    engine_key: str,
    wheelhouse_fingerprint: str,
    model_sha256s: Mapping[str, str | None],
    *,
    provenance: Mapping[str, object] | None = None,
) -> str:
    """The text of ``release.json``; ``model_sha256s``: model id → checksum (None: not fetched).

    ``provenance``: more fields (``rbee.deploys.provenance``: the release id, rbee's version, the engine wheel's
    checksum).
    """
    content = {
        "cluster": cluster,
        "host": host,
        "spec_sha256": spec_sha256,
        "engine": engine_key,
        "wheelhouse": wheelhouse_fingerprint,
        "models": {model_id: sha or NOT_FETCHED for model_id, sha in model_sha256s.items()},
        **(provenance or {}),
    }
    return json.dumps(content, indent=1, sort_keys=True) + "\n"


def origin(spec_file: Path) -> dict[str, object]:
    """Where a release made now from ``spec_file`` comes from: rbee's commit ("" for an installed rbee), the spec's
    commit and whether its checkout has uncommitted changes (the text of ``provenance.json``, as a mapping)."""
    commit, dirty = spec_commit(spec_file)
    return {"rbee_commit": git_commit(), "spec_commit": commit, "spec_dirty": dirty}


def spec_commit(spec_file: Path) -> tuple[str, bool]:
    """The commit of the git work tree holding ``spec_file`` and whether it has uncommitted changes to tracked files
    (``("", False)`` outside a work tree, or without git)."""
    folder = str(spec_file.resolve().parent)
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        if head.returncode != 0:
            return "", False
        status = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=False)  # fmt: skip
    except OSError:
        return "", False
    return head.stdout.strip(), bool(status.stdout.strip())
