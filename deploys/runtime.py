"""Step 3, the runtime: a service user, rbee's folders, a venv with rbee installed from wheels.

Hosts need no internet: the control machine prepares a wheelhouse (rbee + dependencies) for
the host's Python and arch and ships it as one archive; pip installs with ``--no-index``. The wheelhouse
is stamped with its fingerprint and a digest of the unpacked files' ``stat`` listing, the install with the
fingerprint: an unchanged release syncs and installs nothing, and reads nothing but the preflight's state.
"""

from __future__ import annotations

import shlex

from pyinfra.api.deploy import deploy
from pyinfra.operations import files, server

from deploys import control, darwin
from deploys.atomic import put_changed, remove_leftovers
from deploys.operations import stamped_install
from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_state import FUNCTIONS, WHEELHOUSE_STAMP, wheelhouse_listing
from rbee.deploy.layout import CONFIG_DIR, CREDENTIALS_DIR, DATA_DIR, WORKERS_DIR


def _folders(plan: HostPlan, changes: Changes) -> None:
    """rbee's folders, each only where the diff found it missing or with another mode or owner."""
    layout, user = plan.layout, plan.service_user
    for path in (layout.prefix, layout.models, layout.engines):
        if changes.has("dir", path):
            files.directory(name=f"runtime: {path}", path=path, mode="755")
    # root's only: a stamp holds the digest of what a service started from, its credentials included
    if changes.has("dir", layout.stamps):
        files.directory(name=f"runtime: {layout.stamps}", path=layout.stamps, user="root", group="root", mode="700")
    if plan.service_manager == "launchd":
        return
    owned = (
        ("runtime: config folder", CONFIG_DIR, "root", user, "750"),
        ("runtime: worker configs", WORKERS_DIR, "root", user, "750"),
        ("runtime: credentials (root's only)", CREDENTIALS_DIR, "root", "root", "700"),
        ("runtime: state folder", DATA_DIR, user, user, "750"),
    )
    for name, path, owner, group, mode in owned:
        if changes.has("dir", path):
            files.directory(name=name, path=path, user=owner, group=group, mode=mode)


def _ship_wheelhouse(plan: HostPlan, changes: Changes, fingerprint: str) -> None:
    """The wheelhouse as one archive: uploaded (verified), unpacked into a fresh folder swapped in, stamped.

    One transfer instead of one per wheel; the stamp holds the fingerprint and a digest of the unpacked
    files' ``stat`` listing, so a no-op compares it without reading a wheel.
    """
    layout = plan.layout
    archive = control.wheelhouse_archive(plan.features)
    remote = f"{layout.prefix}/.wheelhouse.tar"
    put_changed(
        name="runtime: wheelhouse (rbee and its dependencies, one archive)", src=str(archive), dest=remote,
        mode="600", make_folder=changes.has("dir", layout.prefix), verify_sha256=control.file_sha256(archive),
    )  # fmt: skip
    folder, fresh = shlex.quote(layout.wheelhouse), shlex.quote(f"{layout.wheelhouse}.new")
    stamp = shlex.quote(f"{layout.stamps}/{WHEELHOUSE_STAMP}")
    listing = wheelhouse_listing(layout.wheelhouse)
    server.shell(
        name="runtime: wheelhouse unpacked",
        commands=[
            f"set -e\nrm -rf {fresh} && mkdir -m 755 {fresh} && tar -xf {shlex.quote(remote)} -C {fresh}\n"
            f"chmod 644 {fresh}/*.whl && rm -rf {folder} && mv {fresh} {folder} && rm -f {shlex.quote(remote)}\n"
            f"{FUNCTIONS}printf '%s %s\\n' {shlex.quote(fingerprint)} \"$( {listing} )\" > {stamp}"
        ],
    )


@deploy("rbee runtime")
def runtime(plan: HostPlan, changes: Changes) -> None:
    """Install the rbee runtime where the diff (``changes``) says it is not the planned one."""
    layout = plan.layout
    user = plan.service_user
    for left in changes.of("leftovers"):  # one target: the paths, a line each
        remove_leftovers(name="runtime: temp files of an interrupted upload", paths=left.target.splitlines())
    if plan.service_manager == "launchd":  # macOS: dscl instead of useradd, the state in /usr/local/var/rbee
        darwin.runtime_account_and_folders(plan, changes)
    elif changes.has("account"):
        server.group(name=f"runtime: group {user}", group=user, system=True)
        server.user(
            name=f"runtime: service user {user}", user=user, group=user, system=True,
            home=DATA_DIR, shell="/usr/sbin/nologin", create_home=False, ensure_home=False,
        )  # fmt: skip
    _folders(plan, changes)
    house = control.wheelhouse(plan.features)
    fingerprint = control.wheelhouse_fingerprint(plan.features)
    if changes.has("wheelhouse"):
        _ship_wheelhouse(plan, changes, fingerprint)
    python = shlex.quote(layout.python)
    if changes.has("install", "runtime"):
        stamped_install(
            name="runtime: venv with rbee",
            stamp=f"{layout.stamps}/runtime",
            want=fingerprint,
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
        )
