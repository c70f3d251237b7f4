"""Step 4, the model catalog: each model fetched once on the control machine, copied where placed.

``atomic_put`` compares checksums, so a model already on a host (same content) is not sent
again; a changed model is written beside the old one and renamed over it (a new inode), so a
worker that has the old file mmapped keeps reading intact bytes until it restarts. Each hive
registers its models into its SQLite catalog at start, from its config.
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from deploys import control
from deploys.atomic import atomic_put
from rbee.deploy.host_plan import HostPlan


@deploy("rbee models")
def models(plan: HostPlan) -> dict[str, OperationMeta]:
    """Copy this host's models into place; returns model id → the copy operation."""
    cluster = control.spec()
    copies = {}
    for model_id in plan.models:
        model = cluster.model(model_id)
        dest = plan.layout.model_path(model_id)
        fetched = control.model_file(model, cluster)
        if fetched is None:  # dry run, not fetched yet
            copies[model_id] = files.file(
                name=f"models: {model_id} (dry run: would be fetched from {model.source})", path=dest
            )
        else:
            copies[model_id] = atomic_put(
                name=f"models: {model_id} ({fetched.size_bytes / 2**20:.1f} MiB)",
                src=str(fetched.path), dest=dest, mode="644", sha256=fetched.sha256,
            )  # fmt: skip
    return copies
