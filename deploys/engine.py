"""Step 2, the engine: llama-cpp-python built once per feature set, uploaded, installed, verified.

The feature set (backend, arch, Python, version) comes from the host's plan. CPU wheels
are built on the control machine and cached (``deploy.build_cache``); hosts with the same
feature set get the same wheel. After installing, the host proves the build: ``import
llama_cpp`` works and ``llama_supports_gpu_offload()`` is true exactly for CUDA/Metal builds.
"""

from __future__ import annotations

import shlex

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from deploys import control
from deploys.operations import fail_host, stamped_install
from rbee.deploy.engine_plan import builds_here
from rbee.deploy.host_plan import HostPlan
from rbee.engine.features import local_feature_set


def _verify_command(python: str, gpu_offload: bool) -> str:
    check = (
        "import sys, llama_cpp; ok = bool(llama_cpp.llama_supports_gpu_offload()); "
        f"sys.exit(0 if ok == {gpu_offload} else 'llama_supports_gpu_offload() is %s, expected {gpu_offload}' % ok)"
    )
    return f"{shlex.quote(python)} -c {shlex.quote(check)}"


@deploy("rbee engine")
def engine(plan: HostPlan) -> OperationMeta | None:
    """Upload and install this host's engine wheel; rebuild nothing that is cached."""
    layout = plan.layout
    features = plan.features
    control_set = local_feature_set("cpu", features.version)
    buildable = builds_here(features, control_set)
    cache = control.spec().deploy.build_cache
    wheel = control.engine_wheel(features, cache, can_build=buildable)
    if wheel is None and not buildable:
        fail_host(
            name=f"engine: no wheel for {features.key}",
            reason=(
                f"engine {features.key} is not in the build cache and this control machine builds cpu wheels "
                f"for {control_set.key} only: run `rbee engine build --backend {features.backend}` on a "
                f"{features.arch} machine with the {features.backend} toolchain and copy the wheel into "
                f"{cache}/{features.key}/"
            ),
        )
        return None
    remote_dir = f"{layout.engines}/{features.key}"
    if wheel is None:
        remote_wheel = f"{remote_dir}/llama_cpp_python-{features.version}.whl"
        files.directory(name="engine: (dry run) wheel not built yet", path=remote_dir)
    else:
        remote_wheel = f"{remote_dir}/{wheel.name}"
        files.put(name=f"engine: upload {features.key}", src=str(wheel), dest=remote_wheel, mode="644")
    pip = (
        f"{shlex.quote(layout.python)} -m pip install --quiet --no-index --find-links {shlex.quote(layout.wheelhouse)}"
    )
    return stamped_install(
        name=f"engine: install and verify {features.key}",
        stamp=f"{layout.stamps}/engine",
        want=features.key,
        commands=[
            f"{pip} --force-reinstall --no-deps {shlex.quote(remote_wheel)}",
            f"{pip} 'diskcache>=5.6' numpy",
            _verify_command(layout.python, features.gpu_offload),
        ],
        description=f"engine {features.key}",
    )
