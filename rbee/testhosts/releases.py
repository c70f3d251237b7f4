"""Which Debian release each test host runs.

``assign(names, releases)`` gives h1, h2, ... the releases in order, the last one repeating:
``assign(["h1", "h2", "h3"], ["bookworm", "trixie"])`` → h1 bookworm, h2 and h3 trixie. Each host's
release is recorded in ``hosts/hN/release`` (see ``Paths.release_file``) for as long as the host exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rbee.testhosts.paths import Paths


@dataclass(frozen=True)
class Release:
    """A Debian release the test hosts can run."""

    name: str
    version: str  # /etc/os-release VERSION_ID
    python: str  # python3 --version, major.minor


ENV = "RBEE_TESTHOSTS_RELEASES"  # e.g. "bookworm,trixie": the pytest session's and `rbee testhosts up`'s default
RELEASES = {r.name: r for r in (Release("bookworm", "12", "3.11"), Release("trixie", "13", "3.13"))}
DEFAULT = "bookworm"


class UnknownReleaseError(ValueError):
    """Not a release the test hosts support (or more releases than hosts)."""


def check(name: str) -> str:
    """``name`` when it is a supported release, else ``UnknownReleaseError`` listing the supported ones."""
    if name not in RELEASES:
        raise UnknownReleaseError(f"unknown Debian release {name!r}; supported: {', '.join(RELEASES)}")
    return name


def parse(text: str) -> tuple[str, ...]:
    """``"bookworm, trixie"`` → ``("bookworm", "trixie")`` (checked); empty text → ``()``."""
    return tuple(check(part.strip()) for part in text.split(",") if part.strip())


def assign(names: Sequence[str], releases: Sequence[str]) -> dict[str, str]:
    """Give ``names`` the ``releases`` in order, the last one repeating (no releases: all ``DEFAULT``)."""
    chosen = [check(r) for r in releases] or [DEFAULT]
    if len(chosen) > len(names):
        raise UnknownReleaseError(f"{len(chosen)} releases ({', '.join(chosen)}) for {len(names)} host(s)")
    return {name: chosen[min(i, len(chosen) - 1)] for i, name in enumerate(names)}


def recorded(paths: Paths, name: str) -> str:
    """The release host ``name`` was made with (``DEFAULT`` when it has no record: new, or older than records)."""
    try:
        text = paths.release_file(name).read_text().strip()
    except OSError:
        return DEFAULT
    return text if text in RELEASES else DEFAULT


def record(paths: Paths, name: str, release: str) -> None:
    """Remember that host ``name`` runs ``release``."""
    paths.release_file(name).parent.mkdir(parents=True, exist_ok=True)
    paths.release_file(name).write_text(check(release) + "\n")
