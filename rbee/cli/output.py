"""Where a command's output goes: tables and JSON on stdout (whole rows even when piped), messages on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from rich.console import Console

PIPED_WIDTH = 1_000_000
"""Console width when stdout is a file or a pipe: rich would otherwise cut and wrap at 80 columns."""


def _is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def stdout_console() -> Console:
    """A rich console on stdout: the terminal's width; piped or redirected, no limit, so no row is cut.

    ``COLUMNS`` set in the environment still decides the width, as rich documents.
    """
    console = Console(highlight=False)
    if not _is_terminal() and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, alone: no colours, no wrapping, one trailing newline."""
    typer.echo(json.dumps(data, indent=2))
