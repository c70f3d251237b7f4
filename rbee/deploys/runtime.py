"""Step 2, the runtime's ground: a service user, rbee's folders, the wheelhouse (installed by ``install.py``).

Hosts need no internet: the control machine prepares a wheelhouse (rbee + dependencies) for
the host's Python and arch and ships it as one archive; pip installs from it with ``--no-index``. The wheelhouse
is stamped with its fingerprint and a digest of the unpacked files' ``stat`` listing: an unchanged release
ships nothing, and reads nothing but the preflight's state.
"""

from __future__ import annotations

import shlex

from pyinfra.api.deploy import deploy
from pyinfra.operations import files, server

from rbee.deploy.host_diff import Changes
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_state import FUNCTIONS, WHEELHOUSE_STAMP, wheelhouse_listing
from rbee.deploy.layout import CONFIG_DIR, CREDENTIALS_DIR, DATA_DIR, WORKERS_DIR
from rbee.deploys import control_engine, control_run, darwin
from rbee.deploys.atomic import put_changed, remove_leftovers
from rbee.deploys.operations import account_and_folders


def _folders(plan: HostPlan, changes: Changes) -> list[tuple[str, str, str | None, str | None]]:
    """rbee's folders (path, mode, owner, group) the diff found missing or with another mode or owner."""
    layout, user = plan.layout, plan.service_user
    wanted: list[tuple[str, str, str | None, str | None]] = [
        (layout.prefix, "755", None, None), (layout.models, "755", None, None), (layout.engines, "755", None, None),
        (layout.stamps, "700", "root", "root"),  # root's only: a stamp holds the digest of what a service started from
    ]  # fmt: skip
    if plan.service_manager != "launchd":
        wanted += [
            (CONFIG_DIR, "750", "root", user), (WORKERS_DIR, "750", "root", user),
            (CREDENTIALS_DIR, "700", "root", "root"), (DATA_DIR, "750", user, user),
        ]  # fmt: skip
    return [folder for folder in wanted if changes.has("dir", folder[0])]


def _ship_wheelhouse(plan: HostPlan, fingerprint: str) -> None:
    """The wheelhouse as one archive: uploaded (verified), unpacked into a fresh folder swapped in, stamped.

    One transfer instead of one per wheel; the stamp holds the fingerprint and a digest of the unpacked
    files' ``stat`` listing, so a no-op compares it without reading a wheel.
    """
    layout = plan.layout
    archive = control_engine.wheelhouse_archive(plan.features)
    remote = f"{layout.prefix}/.wheelhouse.tar"
    put_changed(
        name="runtime: wheelhouse (rbee and its dependencies, one archive)", src=str(archive), dest=remote,
        mode="600", verify_sha256=control_run.file_sha256(archive),  # the prefix exists: made by the folders' command
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
    """The service account, the folders and the wheelhouse, where the diff (``changes``) says they differ."""
    user = plan.service_user
    for left in changes.of("leftovers"):  # one target: the paths, a line each
        remove_leftovers(name="runtime: temp files of an interrupted upload", paths=left.target.splitlines())
    folders = _folders(plan, changes)
    if plan.service_manager == "launchd":  # macOS: dscl instead of useradd, the state in /usr/local/var/rbee
        darwin.runtime_account_and_folders(plan, changes)
        if folders:
            account_and_folders(name="runtime: rbee's folders", account=None, folders=folders)
    elif changes.has("account") or folders:
        account = (user, DATA_DIR, control_run.host_state().account) if changes.has("account") else None
        account_and_folders(name=f"runtime: service user {user} and rbee's folders", account=account,
                            folders=folders)  # fmt: skip
    # before the answer: shown only
    if changes.has("wheelhouse") and not control_engine.wheelhouse_at_hand(plan.features):
        files.directory(name="runtime: wheelhouse (to prepare: rbee and its dependencies)", path=plan.layout.wheelhouse)
    elif changes.has("wheelhouse"):
        _ship_wheelhouse(plan, control_engine.wheelhouse_fingerprint(plan.features))
