"""Step 4, the model catalog: each model fetched once on the control machine, copied where placed.

A model is copied when the host has no verified upload of this content at its path: the upload is checked
on the host (sha256) once, then stamped with its size, mtime and inode (``rbee.deploy.host_state``), so a
no-op deploy compares a 5 GB model by ``stat`` instead of reading it, and a file replaced by hand is still
noticed. A changed model is written beside the old one and renamed over it (a new inode), so a worker that
has the old file mmapped keeps reading intact bytes until it restarts. An interrupted copy is continued
by the next deploy: the temp file is named by the content's checksum and only the missing bytes are sent.
Each hive registers its models into its SQLite catalog at start, from its config.
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.operations import files

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_state import upload_stamp
from rbee.deploys import control_models, control_run
from rbee.deploys.atomic import put_changed, set_metadata


def _resume_from(changes: Changes, dest: str) -> int:
    """The bytes of ``dest``'s interrupted copy on the host (0: start afresh)."""
    change = changes.get("upload", dest)
    return change.resume_from if change else 0


@deploy("rbee models")
def models(plan: HostPlan, changes: Changes) -> None:
    """Copy this host's models into place where the diff says they are not there."""
    cluster = control_run.spec()
    for model_id in plan.models:
        model = cluster.model(model_id)
        dest = plan.layout.model_path(model_id)
        if not changes.has("upload", dest):
            if changes.has("file-mode", dest):
                set_metadata(name=f"models: {model_id}", path=dest, mode="644")
            continue
        fetched = control_models.model_file(model, cluster)
        if fetched is None:  # not fetched yet (a dry run, or before the confirmation): shown, never run
            files.file(name=f"models: {model_id} (to fetch from {model.source})", path=dest)
        else:
            put_changed(
                name=f"models: {model_id} ({fetched.size_bytes / 2**20:.1f} MiB)",
                src=str(fetched.path), dest=dest, mode="644", verify_sha256=fetched.sha256,
                stamp=upload_stamp(plan.layout, dest), resume_from=_resume_from(changes, dest),
            )  # fmt: skip
