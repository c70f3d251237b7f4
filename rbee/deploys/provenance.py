"""What a release record says about where the release came from, made once per deploy run.

``release_provenance(engine_wheel_sha256)`` is added to each host's ``release.json`` (``rbee.deploys.control``): the
release id (``--data rbee_release=ID`` from ``rbee deploy``, the same for every batch; else computed here, once per
run, fetching the placed models it digests), rbee's version, the commit of the git checkout holding the spec (and
whether that checkout has uncommitted changes) and the engine wheel's sha256.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pyinfra.context import host

from rbee.deploy.release_id import rbee_version, release_id
from rbee.deploy.release_record import spec_commit
from rbee.deploy.releases import check_release_id
from rbee.spec.models import ModelSpec

_ids: dict[str, str] = {}


@cache
def _spec_commit(spec_file: str) -> tuple[str, bool]:
    return spec_commit(Path(spec_file))


def run_release_id() -> str:
    """This run's release id: ``rbee deploy``'s (host data ``rbee_release``), else computed once per run (again while
    a placed model is not fetched yet: its checksum is part of the id)."""
    from rbee.deploys import control  # control builds the records with this module: imported when first used

    given = host.data.get("rbee_release")
    if given:
        return check_release_id(str(given))
    spec_file = str(host.data.rbee_spec_file)
    with control.once(f"release-id:{spec_file}"):
        if spec_file in _ids:
            return _ids[spec_file]
        cluster = control.spec()
        missing: list[str] = []

        def model_sha(model: ModelSpec) -> str | None:
            found = control.model_file(model, cluster)
            if found is None:
                missing.append(model.id)
            return found.sha256 if found else None

        made = release_id(cluster, control.spec_sha256(), Path(spec_file).parent, model_sha)
        if not missing:
            _ids[spec_file] = made
        return made


def release_provenance(engine_wheel_sha256: str | None) -> dict[str, object]:
    """The record's provenance fields for the current host (its engine wheel's checksum given)."""
    commit, dirty = _spec_commit(str(host.data.rbee_spec_file))
    return {
        "release": run_release_id(), "rbee_version": rbee_version(), "spec_commit": commit, "spec_dirty": dirty,
        "engine_wheel_sha256": engine_wheel_sha256 or "",
    }  # fmt: skip
