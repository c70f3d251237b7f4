"""Step 3, the runtime: a service user, rbee's folders, a venv with rbee installed from wheels.

Hosts need no internet: the control machine prepares a wheelhouse (rbee + dependencies) for
the host's Python and arch and syncs it; pip installs with ``--no-index``. The install is
stamped with the wheelhouse's fingerprint, so an unchanged release installs nothing.
"""

from __future__ import annotations

import shlex

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server

from deploys import control, darwin
from deploys.operations import stamped_install
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.layout import CONFIG_DIR, CREDENTIALS_DIR, DATA_DIR, WORKERS_DIR


@deploy("rbee runtime")
def runtime(plan: HostPlan) -> OperationMeta:
    """Install the rbee runtime; returns the install operation (when it changes, services restart)."""
    layout = plan.layout
    user = plan.service_user
    if plan.service_manager == "launchd":  # macOS: dscl instead of useradd, the state in /usr/local/var/rbee
        darwin.runtime_account_and_folders(plan)
    else:
        server.group(name=f"runtime: group {user}", group=user, system=True)
        server.user(
            name=f"runtime: service user {user}", user=user, group=user, system=True,
            home=DATA_DIR, shell="/usr/sbin/nologin", create_home=False, ensure_home=False,
        )  # fmt: skip
    files.directory(name="runtime: install prefix", path=layout.prefix, mode="755")
    for path in (layout.models, layout.engines):
        files.directory(name=f"runtime: {path}", path=path, mode="755")
    # root's only: a stamp holds the digest of what a service started from, its credentials included
    files.directory(name=f"runtime: {layout.stamps}", path=layout.stamps, user="root", group="root", mode="700")
    if plan.service_manager != "launchd":
        files.directory(name="runtime: config folder", path=CONFIG_DIR, user="root", group=user, mode="750")
        files.directory(name="runtime: worker configs", path=WORKERS_DIR, user="root", group=user, mode="750")
        files.directory(name="runtime: credentials (root's only)", path=CREDENTIALS_DIR, user="root", group="root",
                        mode="700")  # fmt: skip
        files.directory(name="runtime: state folder", path=DATA_DIR, user=user, group=user, mode="750")
    house = control.wheelhouse(plan.features)
    files.sync(
        name="runtime: wheelhouse (rbee and its dependencies)",
        src=str(house.folder), dest=layout.wheelhouse, delete=True, mode="644", dir_mode="755",
        exclude=["*/.deps", "*/.rbee-source"],
    )  # fmt: skip
    python = shlex.quote(layout.python)
    return stamped_install(
        name="runtime: venv with rbee",
        stamp=f"{layout.stamps}/runtime",
        want=house.fingerprint,
        commands=[
            # a venv cut short by an interrupted deploy has python but no pip: make it again
            f"{python} -m pip --version >/dev/null 2>&1 || "
            f"{{ rm -rf {shlex.quote(layout.venv)} && python3 -m venv {shlex.quote(layout.venv)}; }}",
            f"{python} -m pip install --quiet --no-index --find-links {shlex.quote(layout.wheelhouse)} "
            f"--force-reinstall --no-deps {shlex.quote(layout.wheelhouse + '/' + house.rbee_wheel.name)}",
            f"{python} -m pip install --quiet --no-index --find-links {shlex.quote(layout.wheelhouse)} "
            f"{shlex.quote(layout.wheelhouse + '/' + house.rbee_wheel.name)}",
            f"{python} -c 'import rbee_runtime.queen, rbee_runtime.hive, rbee_runtime.worker'",
        ],
        description="rbee runtime",
    )
