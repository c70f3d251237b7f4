"""Step 2, the engine: llama-cpp-python built once per feature set, uploaded, installed, verified.

The feature set comes from the host's plan. The control machine builds the sets it can; any other
is built once on a host of that set (``deploys.control.engine_wheel``); wheels are cached
(``deploy.build_cache``) and hosts with the same feature set get the same wheel. A wheel whose tags
the host's Python would refuse fails the host before the upload. After installing, the host proves
the build: ``import llama_cpp`` works and ``llama_supports_gpu_offload()`` is true exactly for
CUDA/Metal builds.
"""

from __future__ import annotations

import shlex

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.context import host
from pyinfra.operations import files

from deploys import control
from deploys.atomic import atomic_put
from deploys.operations import fail_host, stamped_install
from rbee.deploy.host_plan import HostPlan
from rbee.engine.wheel_tags import wheel_problem


def _verify_command(python: str, gpu_offload: bool) -> str:
    check = (
        "import sys, llama_cpp; ok = bool(llama_cpp.llama_supports_gpu_offload()); "
        f"sys.exit(0 if ok == {gpu_offload} else 'llama_supports_gpu_offload() is %s, expected {gpu_offload}' % ok)"
    )
    return f"{shlex.quote(python)} -c {shlex.quote(check)}"


@deploy("rbee engine")
def engine(plan: HostPlan) -> OperationMeta | None:
    """Upload and install this host's engine wheel; build nothing that is cached."""
    layout = plan.layout
    features = plan.features
    found = control.engine_wheel(features)
    if found.failure:
        fail_host(name=f"engine: no wheel for {features.key}", reason=found.failure)
        return None
    remote_dir = f"{layout.engines}/{features.key}"
    if found.wheel is None:
        remote_wheel = f"{remote_dir}/llama_cpp_python-{features.version}.whl"
        files.directory(name="engine: (dry run) wheel not built yet", path=remote_dir)
    else:
        problem = wheel_problem(found.wheel.name, host.name, features)
        if problem:
            fail_host(name=f"engine: wheel does not fit {host.name}", reason=problem)
            return None
        remote_wheel = f"{remote_dir}/{found.wheel.name}"
        atomic_put(name=f"engine: upload {features.key}", src=str(found.wheel), dest=remote_wheel, mode="644")
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
