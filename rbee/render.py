"""Render the shared jinja2 templates (``templates/``); the typed contexts are ``rbee.deploy.templates``."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

import rbee


def templates_dir() -> Path:
    """The templates folder: ``$RBEE_TEMPLATES`` or the repository's ``templates/``."""
    return Path(os.environ.get("RBEE_TEMPLATES") or Path(rbee.__file__).resolve().parents[1] / "templates")


@cache
def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # YAML and unit files, not HTML
    )


def render(name: str, context: dict[str, Any]) -> str:
    """Render ``templates/<name>`` with ``context`` (a missing variable is an error, never blank)."""
    return _environment(templates_dir()).get_template(name).render(**context)
