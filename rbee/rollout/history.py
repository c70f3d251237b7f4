"""The cluster's release history, as the control machine sees it: each host's kept releases, a deploy's release id,
and which release ``rbee rollback`` returns to (checked on every host before anything changes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from rbee.deploy.layout import HostLayout
from rbee.deploy.release_id import release_id
from rbee.deploy.releases import HostReleases, check_release_id, list_command, parse_listing
from rbee.models import cached_model, fetch_model
from rbee.models.progress import progress_bar, rich_progress_callback
from rbee.rollout.host_read import read_on_hosts
from rbee.spec import ClusterSpec
from rbee.spec.models import ModelSpec


def deploy_release_id(spec: ClusterSpec, spec_file: Path, fetch: bool = True) -> str:
    """The release id of deploying ``spec_file`` now (``rbee.deploy.release_id``). A placed model not cached counts by
    the ``sha256`` the spec pins (fetched later, by the deploy, only for a host that lacks it); one not pinned is
    fetched into the model cache first, unless ``fetch`` is false (then it counts by its source: ``rbee status``
    comparing without fetching)."""
    cache = Path(spec.deploy.model_cache).expanduser()

    def model_sha(model: ModelSpec) -> str | None:
        found = cached_model(model, cache)
        if found is None and fetch and model.sha256 is None:  # a pinned sha256 is the id's input: nothing to fetch
            with progress_bar(Console(stderr=True)) as bar:
                found = fetch_model(model, cache, progress=rich_progress_callback(bar))
        return found.sha256 if found else None

    spec_sha256 = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    return release_id(spec, spec_sha256, spec_file.resolve().parent, model_sha)


def read_releases(spec: ClusterSpec, spec_file: Path, hosts: list[str] | None = None) -> dict[str, HostReleases | str]:
    """Host → its kept releases, or why they could not be read (unreachable, no python3, an unreadable listing)."""
    names = hosts or [h.name for h in spec.hosts]
    answers = read_on_hosts(spec_file, list_command(HostLayout(spec.deploy.prefix)), limit=hosts)
    out: dict[str, HostReleases | str] = {}
    for name in names:
        text = answers.get(name)
        if text is None:
            out[name] = "not reached (rbee preflight tells why)"
            continue
        try:
            out[name] = parse_listing(text)
        except (ValueError, KeyError, TypeError):
            out[name] = f"could not read its releases: {text.strip()[:200] or 'no answer'}"
    return out


@dataclass(frozen=True)
class RollbackTarget:
    """The release every host returns to, or the problems that stop the rollback before it starts."""

    release: str
    problems: tuple[str, ...]


def rollback_target(listings: dict[str, HostReleases | str], wanted: str | None) -> RollbackTarget:
    """``wanted`` (checked: a release id) or, when None, the release before the current one, which must be the same on
    every host; each host must keep it. Every problem names its host."""
    problems: list[str] = []
    if wanted is not None:
        check_release_id(wanted)
    readable = {h: found for h, found in listings.items() if isinstance(found, HostReleases)}
    problems += [f"{h}: {found}" for h, found in listings.items() if isinstance(found, str)]
    release = wanted
    if release is None:
        before = {h: found.before_current() for h, found in readable.items()}
        choices = sorted({r for r in before.values() if r})
        if len(choices) != 1:
            told = ", ".join(f"{h}: {r or 'none'}" for h, r in before.items())
            problems.append(f"no single release ran before the current one on every host ({told}); name one with --to")
            return RollbackTarget("", tuple(problems))
        release = choices[0]
    for host, found in readable.items():
        if found.get(release) is None:
            kept = ", ".join(r.id for r in found.releases) or "none"
            problems.append(f"{host}: release {release} is not kept there (kept: {kept})")
    return RollbackTarget(release, tuple(problems))
