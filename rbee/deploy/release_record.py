"""What a deploy put on a host, as the text of ``<prefix>/release.json`` (read by ``rbee status``).

Built here once for the pyinfra deploy (``rbee/deploys/record.py``) and the Ansible path
(``rbee.deploy.ansible_steps``). Only inputs go in (spec hash, git commit, engine build, wheelhouse
and model checksums), no time stamp: an unchanged deploy writes the same record, byte for byte.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from rbee.deploy.rbee_wheel import source_tree

RECORD = "release.json"
"""The record's file name, in the host's prefix."""

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
    commit: str | None = None,
    provenance: Mapping[str, object] | None = None,
) -> str:
    """The text of ``release.json``; ``model_sha256s``: model id → checksum (None: not fetched).

    ``commit``: the git commit to record (default: this checkout's, ``git_commit()``); ``provenance``: more fields
    (``rbee.deploys.provenance``: the release id, rbee's version, the spec's commit, the engine wheel's checksum).
    """
    content = {
        "cluster": cluster,
        "host": host,
        "spec_sha256": spec_sha256,
        "git_commit": git_commit() if commit is None else commit,
        "engine": engine_key,
        "wheelhouse": wheelhouse_fingerprint,
        "models": {model_id: sha or NOT_FETCHED for model_id, sha in model_sha256s.items()},
        **(provenance or {}),
    }
    return json.dumps(content, indent=1, sort_keys=True) + "\n"


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
