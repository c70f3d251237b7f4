"""``rbee --version``: rbee's version from its package metadata, and the Python running it."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import typer


def version_text() -> str:
    """``rbee 0.1.0 (Python 3.11.7)``; ``unknown`` when rbee runs from a folder without being installed."""
    try:
        rbee = version("rbee")
    except PackageNotFoundError:
        rbee = "unknown (not installed)"
    return f"rbee {rbee} (Python {platform.python_version()})"


def show_version(value: bool) -> None:
    """The eager ``--version`` option: print the version and exit 0."""
    if value:
        typer.echo(version_text())
        raise typer.Exit()
