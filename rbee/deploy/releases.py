"""Release history on the hosts: the commands that keep, list and restore releases, and what a listing says.

Every deploy that changes a host keeps what it installed as ``<prefix>/releases/<id>`` (the venv as hard links,
``/etc/rbee``, the rbee units, the stamps, ``release.json``; its models as hard links in
``<models>/.rbee-releases/<id>``) and points ``<prefix>/releases/current`` at it; ``rbee rollback`` brings a host
back to a kept release. The work on the host is ``rbee.deploy.host_releases`` (standard library only), sent as
``python3 -c <its text> ACTION JSON``: one round trip per host and action. The id is the same on every host of
a deploy (``rbee.deploy.release_id``), so ``rbee rollback --to ID`` names one release of the whole cluster.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbee.deploy import host_releases
from rbee.deploy.layout import CONFIG_DIR, HostLayout

UNITS = "/etc/systemd/system"
TEMP_MARK = ".rbee-tmp-"
"""What an rbee temp file's name holds (``rbee/deploys/atomic.py``): a leftover is removed by the next deploy."""

RELEASE_ID = host_releases.RELEASE_ID
"""``<rbee version>-<12 hex digits>``: checked before an id reaches a host (and again on the host)."""

DEFAULT_KEEP = 5
"""Releases kept per host when the spec does not say (``deploy.keep_releases``)."""


class ReleaseIdError(ValueError):
    """Not a release id (the text is quoted in the message)."""


def check_release_id(text: str) -> str:
    """``text`` when it is a release id, else ``ReleaseIdError`` saying what one looks like."""
    if not RELEASE_ID.match(text):
        raise ReleaseIdError(f"not a release id: {text[:80]!r} (one looks like 0.1.0-3fa2b19c0d4e; see rbee releases)")
    return text


def host_paths(layout: HostLayout) -> dict[str, Any]:
    """Where the host's release lives, as ``host_releases.Store`` takes it."""
    return {"prefix": layout.prefix, "models": layout.models, "config": CONFIG_DIR, "units": UNITS}


def host_command(action: str, args: dict[str, Any]) -> str:
    """The shell command that runs ``host_releases`` on the host (root's ``python3``)."""
    source = Path(host_releases.__file__).read_text()
    return f"python3 -c {shlex.quote(source)} {shlex.quote(action)} {shlex.quote(json.dumps(args, sort_keys=True))}"


def keep_command(
    layout: HostLayout, release: str, record: str | None, keep: int, origin: Mapping[str, object] | None = None
) -> str:
    """Keep the live install as ``release`` with ``record`` as its ``release.json`` (None: the live one, as it is)
    and ``origin`` (the commits it came from, ``rbee.deploy.release_record.origin``) as its ``provenance.json``."""
    args = {
        "paths": host_paths(layout), "release": check_release_id(release), "record": record, "keep": keep,
        "origin": dict(origin) if origin is not None else None,
    }  # fmt: skip
    return host_command("keep", args)


def adopt_command(layout: HostLayout, keep: int) -> str:
    """Keep the live release when it was never kept (``host_releases.Store.adopt``; decided on the host)."""
    return host_command("adopt", {"paths": host_paths(layout), "keep": keep})


def list_command(layout: HostLayout) -> str:
    """Print the host's kept releases as JSON (``parse_listing``); changes nothing."""
    return host_command("list", {"paths": host_paths(layout)})


def restore_command(layout: HostLayout, target: str, dry: bool = False) -> str:
    """Bring the host back to ``target``: a kept release id, or ``undo:<id>`` (what a failed rollout of ``<id>``
    returns to: the release current before it)."""
    check_release_id(target.removeprefix("undo:"))
    return host_command("restore", {"paths": host_paths(layout), "target": target, "dry": dry})


_LEGACY_ORIGIN = {"rbee_commit": "git_commit"}
"""Origin fields a record of an older rbee named otherwise."""


@dataclass(frozen=True)
class KeptRelease:
    """One kept release of a host: its id, when it was kept, its record, the workers it runs and where it came from
    (``origin``: the commits; a release kept before they moved out of the record has them in ``record``)."""

    id: str
    created: float
    record: dict[str, Any]
    workers: tuple[str, ...]
    origin: dict[str, Any] = field(default_factory=dict)

    def came_from(self, key: str) -> Any:
        """An origin field (``spec_commit``, ``spec_dirty``, ``rbee_commit``), from the record of an older release."""
        return self.origin.get(key, self.record.get(_LEGACY_ORIGIN.get(key, key)))


@dataclass(frozen=True)
class HostReleases:
    """A host's kept releases (the most recently running first) and which one runs."""

    current: str = ""
    releases: tuple[KeptRelease, ...] = ()
    switched_from: str = ""
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def get(self, release: str) -> KeptRelease | None:
        return next((r for r in self.releases if r.id == release), None)

    def before_current(self) -> str:
        """The release that ran before the current one ("" when none is kept): ``rbee rollback``'s default."""
        seen = [h["id"] for h in self.history if h.get("id") != self.current]
        kept = {r.id for r in self.releases}
        for release in reversed(seen):
            if release in kept:
                return str(release)
        return next((r.id for r in self.releases if r.id != self.current), "")


def parse_listing(text: str) -> HostReleases:
    """What ``list_command`` printed (``ValueError`` when it is not that)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a release listing")
    releases = tuple(
        KeptRelease(
            str(r["id"]),
            float(r.get("created") or 0),
            dict(r.get("record") or {}),
            tuple(r.get("workers") or ()),
            dict(r.get("origin") or {}),
        )
        for r in data.get("releases") or ()
        if RELEASE_ID.match(str(r.get("id", "")))
    )
    switch = data.get("switch") or {}
    history = tuple(h for h in data.get("history") or () if isinstance(h, dict))
    return HostReleases(str(data.get("current") or ""), releases, str(switch.get("from") or ""), history)
