"""Step 4, the model catalog: each model fetched once on the control machine, copied where placed.

``files.put`` compares checksums, so a model already on a host (same content) is not sent
again. Each hive registers its models into its SQLite catalog at start, from its config.
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.context import host
from pyinfra.operations import files

from deploys import control
from rbee.deploy.layout import HostLayout


@deploy("rbee models")
def models() -> dict[str, OperationMeta]:
    """Copy this host's models into place; returns model id → the copy operation."""
    layout = HostLayout(host.data.rbee_deploy["prefix"])
    cache = host.data.rbee_deploy["model_cache"]
    copies = {}
    for raw in host.data.rbee_models:
        dest = layout.model_path(raw["id"])
        fetched = control.model_file(raw, cache)
        if fetched is None:  # dry run, not fetched yet
            copies[raw["id"]] = files.file(
                name=f"models: {raw['id']} (dry run: would be fetched from {raw['source']})", path=dest
            )
        else:
            copies[raw["id"]] = files.put(
                name=f"models: {raw['id']} ({fetched.size_bytes / 2**20:.1f} MiB)",
                src=str(fetched.path), dest=dest, mode="644",
            )  # fmt: skip
    return copies
