"""The cluster secret on the control machine: made at the first deploy, kept 0600, the same ever after.

Everything of the internal plane derives from it (``rbee_runtime.common.credentials``): the queen's
host gets the secret, each hive its own credential and its workers' one. It lives outside the
repository, in ``$XDG_STATE_HOME/rbee/clusters/<cluster>/cluster-secret`` (default
``~/.local/state/rbee/…``; ``$RBEE_STATE_DIR`` replaces ``…/rbee``). A CI job that deploys gives it
as the ``RBEE_CLUSTER_SECRET`` environment variable (a secret of the deploy job), so every run uses
the same one: a new secret would restart every service of the cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from rbee_runtime.common.credentials import (
    CredentialError,
    check_secret,
    new_cluster_secret,
    read_credential,
    readable_by_others,
    write_credential,
)

ENV = "RBEE_CLUSTER_SECRET"


class ClusterSecretError(Exception):
    """The cluster secret exists but cannot be used; the message says what to do."""


def state_dir() -> Path:
    """Where rbee keeps the control machine's state (``$RBEE_STATE_DIR``, else the XDG state folder)."""
    explicit = os.environ.get("RBEE_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_STATE_HOME") or "~/.local/state").expanduser() / "rbee"


def secret_path(cluster: str) -> Path:
    """The file holding cluster ``cluster``'s secret."""
    return state_dir() / "clusters" / cluster / "cluster-secret"


def cluster_secret(cluster: str, *, create: bool = True) -> str | None:
    """The secret of ``cluster``: ``$RBEE_CLUSTER_SECRET``, else its file (made when ``create`` and missing).

    None when there is none and ``create`` is false (a plan that must not leave state behind).
    """
    given = os.environ.get(ENV)
    if given:
        try:
            return check_secret(given, f"${ENV}")
        except CredentialError as exc:
            how = "python3 -c 'import secrets; print(secrets.token_hex(32))'"
            raise ClusterSecretError(f"{exc}; make one with: {how}") from exc
    path = secret_path(cluster)
    if not path.exists():
        if not create:
            return None
        try:
            write_credential(path, new_cluster_secret())
        except OSError as exc:
            raise ClusterSecretError(f"cannot keep the cluster secret in {path}: {exc.strerror or exc}") from exc
    if why := readable_by_others(path, "the cluster secret"):
        raise ClusterSecretError(why)
    try:
        return read_credential(path, "the cluster secret")
    except CredentialError as exc:
        raise ClusterSecretError(str(exc)) from exc
