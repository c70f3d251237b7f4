"""What a release record says about where the release came from, made once per deploy run.

``release_provenance(engine_wheel_sha256)`` is added to each host's ``release.json`` (``rbee.deploys.control``):
the release id (``--data rbee_release=ID`` from ``rbee deploy``, the same for every batch; else computed here, once
per run, fetching the placed models it digests unless the spec pins their sha256), rbee's version and the engine
wheel's sha256. ``release_origin()``: the commits (rbee's checkout, the spec's and whether it has uncommitted
changes), kept with a new release only (``provenance.json``), never compared by the diff.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pyinfra.context import host

from rbee.deploy.release_id import rbee_version, release_id
from rbee.deploy.release_record import origin
from rbee.deploy.releases import check_release_id
from rbee.spec.models import ModelSpec

_ids: dict[str, str] = {}


@cache
def _origin(spec_file: str) -> dict[str, object]:
    return origin(Path(spec_file))


def run_release_id() -> str:
    """This run's release id: ``rbee deploy``'s (host data ``rbee_release``), else computed once per run (again while
    a placed model is not fetched yet: its checksum is part of the id)."""
    from rbee.deploys import (  # control builds the records with this module: imported when first used
        control_models,
        control_run,
    )

    given = host.data.get("rbee_release")
    if given:
        return check_release_id(str(given))
    spec_file = str(host.data.rbee_spec_file)
    with control_run.once(f"release-id:{spec_file}"):
        if spec_file in _ids:
            return _ids[spec_file]
        cluster = control_run.spec()
        missing: list[str] = []

        def model_sha(model: ModelSpec) -> str | None:
            found = control_models.model_sha256(model, cluster)  # pinned: the pin, nothing fetched
            if found is None:
                missing.append(model.id)
            return found

        made = release_id(cluster, control_run.spec_sha256(), Path(spec_file).parent, model_sha)
        if not missing:
            _ids[spec_file] = made
        return made


def release_provenance(engine_wheel_sha256: str | None) -> dict[str, object]:
    """The record's provenance fields for the current host (its engine wheel's checksum given)."""
    return {
        "release": run_release_id(),
        "rbee_version": rbee_version(),
        "engine_wheel_sha256": engine_wheel_sha256 or "",
    }


def release_origin() -> dict[str, object]:
    """The commits a release kept by this run comes from (asked once per run)."""
    return dict(_origin(str(host.data.rbee_spec_file)))
