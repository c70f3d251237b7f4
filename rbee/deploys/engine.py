"""Step 2b, the engine: llama-cpp-python built once per feature set and uploaded (installed by ``install.py``).

The feature set comes from the host's plan. The control machine builds the sets it can; any other
is built once on a host of that set (``rbee.deploys.control_engine.engine_wheel``); wheels are cached
(``deploy.build_cache``) and hosts with the same feature set get the same wheel. A wheel whose tags
the host's Python would refuse fails the host before the upload. After installing, the host proves
the build: ``import llama_cpp`` works and ``llama_supports_gpu_offload()`` is true exactly for
CUDA/Metal builds (``rbee/deploys/install.py``). The upload is verified on the host and stamped (sha256 +
stat), so a later deploy knows the wheel by ``stat`` without reading it.

A host that has its feature set's engine installed keeps it (``control_engine.installed_engine``): a control
machine with an empty cache (a fresh CI runner) builds no engine and uploads none for it, and one whose cache holds
another build of the same set (builds are not byte-identical) does not replace it.
"""

from __future__ import annotations

import posixpath

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import files

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_state import upload_stamp
from rbee.deploys import control_engine, control_run
from rbee.deploys.atomic import put_changed, set_metadata
from rbee.deploys.operations import fail_host
from rbee.engine.wheel_tags import wheel_problem


@deploy("rbee engine")
def engine(plan: HostPlan, changes: Changes) -> None:
    """Upload this host's engine wheel where the diff says it is not there; build nothing cached, nor anything the
    host already has (its installed wheel of this feature set is kept, whatever this machine's cache holds)."""
    layout = plan.layout
    features = plan.features
    kept = control_engine.installed_engine(plan)
    if kept is not None:  # the host has this feature set's engine: nothing built, nothing uploaded
        if changes.has("file-mode", kept[0]):
            set_metadata(name=f"engine: upload {features.key}", path=kept[0], mode="644")
        return
    found = control_engine.engine_wheel(features)
    if found.failure:
        fail_host(name=f"engine: no wheel for {features.key}", reason=found.failure)
        return
    if found.wheel is not None and (problem := wheel_problem(found.wheel.name, host.name, features)):
        fail_host(name=f"engine: wheel does not fit {host.name}", reason=problem)
        return
    remote_wheel = control_engine.remote_engine_wheel(plan, found)
    if changes.has("upload", remote_wheel):
        if found.wheel is None:  # not built yet (a dry run, or before the confirmation): shown, never run
            files.directory(name=f"engine: upload {features.key} (to build)", path=posixpath.dirname(remote_wheel))
        else:
            sha = control_run.file_sha256(found.wheel)
            put_changed(
                name=f"engine: upload {features.key}", src=str(found.wheel), dest=remote_wheel, mode="644",
                make_folder=changes.has("dir", layout.engines) or remote_wheel not in control_run.host_state().big,
                verify_sha256=sha, stamp=upload_stamp(layout, remote_wheel),
            )  # fmt: skip
    elif changes.has("file-mode", remote_wheel):
        set_metadata(name=f"engine: upload {features.key}", path=remote_wheel, mode="644")
