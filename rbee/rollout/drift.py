"""Which hosts drifted from the release they run: what ``rbee deploy --only-drift`` heals, and what it leaves alone.

Each host's plan (``rbee plan``'s dry run: ``rbee.rollout.plan``) and the release its record names
(``<prefix>/release.json``, read only where the plan has changes) against the release id the spec at hand makes on
this control machine (``wanted_release``):

- no change planned: ``in-sync``, and nothing more is sent to it;
- changes, on a host that runs the spec at hand's release: ``drifted`` (a file edited by hand, a service stopped,
  a model gone): deploying that same release again puts it back, and no new release is made;
- changes, on a host that runs another release, none, or one this machine cannot tell (its record unreadable, the
  spec at hand's id unknown here): ``pending``, a release change nobody deployed yet, left to ``rbee deploy``;
- not reached, or it cannot be deployed, or its record could not be read: ``failed``.

The spec at hand's id is ``rbee.deploy.release_id`` as ``rbee deploy`` makes it, without fetching anything: each
placed model's sha256 from the model cache, else the ``sha256`` the spec pins (what a fetch verifies, so the same
digest); a placed model with neither leaves the id unknown (every host with changes is then ``pending``).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rbee.deploy.release_id import release_id
from rbee.deploy.release_record import RECORD
from rbee.models import cached_model
from rbee.rollout.host_read import read_on_hosts
from rbee.rollout.plan import Plan
from rbee.rollout.plan_render import change_lines
from rbee.spec import ClusterSpec
from rbee.spec.models import ModelSpec

DriftState = Literal["in-sync", "drifted", "pending", "failed"]


@dataclass(frozen=True)
class WantedRelease:
    """The release id deploying the spec at hand would make (``""``: unknown, ``unknown_models`` say why)."""

    id: str
    unknown_models: tuple[str, ...] = ()


def wanted_release(spec: ClusterSpec, spec_file: Path) -> WantedRelease:
    """The spec at hand's release id, from the model cache and the spec's pinned checksums (fetches nothing)."""
    cache = Path(spec.deploy.model_cache).expanduser()
    unknown: list[str] = []

    def model_sha(model: ModelSpec) -> str | None:
        found = cached_model(model, cache)
        sha = found.sha256 if found is not None else model.sha256
        if sha is None:
            unknown.append(model.id)
        return sha

    made = release_id(spec, hashlib.sha256(spec_file.read_bytes()).hexdigest(), spec_file.resolve().parent, model_sha)
    return WantedRelease("" if unknown else made, tuple(sorted(set(unknown))))


def record_command(prefix: str) -> str:
    """Print the host's release record (nothing when it has none); changes nothing."""
    return f"cat {shlex.quote(f'{prefix}/{RECORD}')} 2>/dev/null || true"


def recorded_release(text: str) -> str:
    """The release id a record's text names (``""``: no record, or none readable in it)."""
    try:
        found = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return ""
    release = found.get("release") if isinstance(found, dict) else None
    return release if isinstance(release, str) else ""


def read_recorded(spec: ClusterSpec, spec_file: Path, hosts: list[str]) -> dict[str, str | None]:
    """Host → the release its record names (``""``: none; None: not reached), one read-only command per host."""
    if not hosts:
        return {}
    answers = read_on_hosts(spec_file, record_command(spec.deploy.prefix), limit=hosts)
    return {host: recorded_release(answers[host]) if host in answers else None for host in hosts}


@dataclass(frozen=True)
class HostDrift:
    """One host's verdict: its state, the release its record names, why (for ``pending`` and ``failed``), and
    what the plan would change there (a line per change, as ``rbee plan`` prints them)."""

    host: str
    state: DriftState
    recorded: str = ""
    reason: str = ""
    changes: tuple[str, ...] = ()


def planned_changes(plan: Plan, host: str) -> tuple[str, ...]:
    """What the plan would change on ``host``: its change lines, else its operations' names."""
    found = plan.hosts.get(host)
    if found is not None and found.pending:
        return tuple(line for line, _ in change_lines(found))
    return tuple(plan.changes.get(host, []))


def _pending_reason(recorded: str, wanted: WantedRelease) -> str:
    if not wanted.id:
        models = ", ".join(wanted.unknown_models)
        return (f"the spec at hand's release is unknown here: model(s) {models} neither in this machine's model "
                "cache nor pinned by sha256 in the spec; rbee deploy fetches them")  # fmt: skip
    if not recorded:
        return f"no release recorded on the host (never deployed by rbee deploy); the spec at hand is {wanted.id}"
    return f"runs release {recorded}, the spec at hand is {wanted.id}"


def classify(plan: Plan, recorded: Mapping[str, str | None], wanted: WantedRelease) -> list[HostDrift]:
    """Each host of the plan, in spec order (see the module docstring); ``recorded``: the hosts with changes."""
    out: list[HostDrift] = []
    for host in plan.names():
        status = plan.status(host)
        if status == "unreachable":
            out.append(HostDrift(host, "failed", reason="unreachable: its changes are unknown"))
        elif status == "failing":
            out.append(HostDrift(host, "failed", reason="cannot be deployed: " + "; ".join(plan.failing[host])))
        elif status == "ok":
            out.append(HostDrift(host, "in-sync"))
        else:
            changes, release = planned_changes(plan, host), recorded.get(host)
            if release is None:
                out.append(HostDrift(host, "failed", reason="its release record could not be read (not reached)",
                                     changes=changes))  # fmt: skip
            elif wanted.id and release == wanted.id:
                out.append(HostDrift(host, "drifted", release, changes=changes))
            else:
                out.append(HostDrift(host, "pending", release, _pending_reason(release, wanted), changes))
    return out
