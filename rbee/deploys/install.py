"""Step 3, the install: rbee's runtime and this host's engine put in the venv in one pip pass, proved by one check.

Runs after the wheelhouse (``runtime.py``) and the engine wheel (``engine.py``) are on the host,
when the diff lists either install (its stamp is not this run's). One remote command: a venv (made again when
an interrupted deploy left one without pip), the changed packages uninstalled (their versions never change, so
pip would keep the old files), one ``pip install --no-index`` of the rbee wheel and the engine wheel with their
dependencies from the wheelhouse, then one ``python -c`` that imports the runtime's services and ``llama_cpp``
and checks ``llama_supports_gpu_offload()`` against the feature set, then both stamps. A failure leaves the old
stamps: the next deploy does the whole install again.
"""

from __future__ import annotations

import shlex

from pyinfra.api.deploy import deploy

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.layout import HostLayout
from rbee.deploy.wheelhouse import wheelhouse_target
from rbee.deploys import control_engine
from rbee.deploys.operations import stamped_install
from rbee.engine.features import FeatureSet


def check_script(gpu_offload: bool) -> str:
    """Python that exits 0 when the runtime imports and the engine's GPU offload is ``gpu_offload``."""
    return (
        "import sys, rbee_runtime.queen, rbee_runtime.hive, rbee_runtime.worker, llama_cpp\n"
        "ok = bool(llama_cpp.llama_supports_gpu_offload())\n"
        f"sys.exit(0 if ok == {gpu_offload} else 'llama_supports_gpu_offload() is %s, expected {gpu_offload}' % ok)"
    )


def extra_requirements(features: FeatureSet) -> list[str]:
    """What a host installs beside rbee and the engine, from its wheelhouse: NVML and the CUDA runtime on CUDA."""
    return list(wheelhouse_target(features).extras)


def install_command(layout: HostLayout, wheels: list[str], replaced: list[str], gpu_offload: bool) -> str:
    """The one shell command of the install: venv, uninstall ``replaced``, install ``wheels`` (wheel paths and
    requirements, every one from the wheelhouse), check."""
    python, venv = shlex.quote(layout.python), shlex.quote(layout.venv)
    uninstall = " ".join(shlex.quote(name) for name in replaced)
    return (
        f"set -e\nif {python} -c 'import pip' >/dev/null 2>&1; then\n"
        f"  {python} -m pip uninstall --quiet --yes {uninstall} >/dev/null 2>&1 || true\n"
        f"else rm -rf {venv} && python3 -m venv {venv}; fi\n"
        f"{python} -m pip install --quiet --disable-pip-version-check --no-index "
        f"--find-links {shlex.quote(layout.wheelhouse)} {' '.join(shlex.quote(w) for w in wheels)}\n"
        f"{python} -c {shlex.quote(check_script(gpu_offload))}"
    )


@deploy("rbee install")
def install(plan: HostPlan, changes: Changes) -> None:
    """Install the runtime and the engine where the diff says either is not this run's (nothing otherwise)."""
    runtime, engine = changes.has("install", "runtime"), changes.has("install", "engine")
    if not (runtime or engine):
        return
    engine_path = control_engine.host_engine_path(plan)
    if engine_path is None:  # no engine: the engine step has failed this host
        return
    layout = plan.layout
    fingerprint = control_engine.wheelhouse_fingerprint(plan.features)
    rbee_wheel = f"{layout.wheelhouse}/{control_engine.rbee_wheel_name(plan.features)}"
    replaced = ["rbee"] * runtime + ["llama_cpp_python"] * engine
    wheels = [rbee_wheel, engine_path, *extra_requirements(plan.features)]
    command = install_command(layout, wheels, replaced, plan.features.gpu_offload)
    stamps = {f"{layout.stamps}/runtime": fingerprint, f"{layout.stamps}/engine": plan.features.key}
    stamped_install(name=f"install: rbee and engine {plan.features.key}, one pip pass", commands=[command],
                    stamps=stamps)  # fmt: skip
