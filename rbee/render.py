"""Render the shared jinja2 templates (``rbee/templates/``); the typed contexts are ``rbee.deploy.templates``.

The files rendered are line-based (systemd units, env files, YAML): a value holding a newline or any
other control character could add a line, e.g. a root directive to a unit. So no such value is ever
rendered: the context is checked first (the error names the field), and a ``finalize`` hook checks
every value a template prints (derived ones included).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

import rbee
from rbee.spec.issues import show
from rbee.spec.text import bad_character


class RenderError(ValueError):
    """A value to render holds a control character (newline, tab, NUL, ...)."""


def templates_dir() -> Path:
    """The templates folder: ``$RBEE_TEMPLATES`` or the package's own ``rbee/templates/``."""
    return Path(os.environ.get("RBEE_TEMPLATES") or Path(rbee.__file__).resolve().parent / "templates")


def _refuse(value: str, where: str) -> None:
    if (char := bad_character(value)) is not None:
        raise RenderError(f"{where} holds the control character {char!r} (got {show(value)}); refusing to render it")


def check_context(value: Any, where: str) -> None:
    """Raise ``RenderError`` naming the field (``models[0].source``) of the first string with a control character."""
    if isinstance(value, str):
        _refuse(value, where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_context(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_context(item, f"{where}[{index}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            check_context(getattr(value, field.name), f"{where}.{field.name}")


def _finalize(value: Any) -> Any:
    if isinstance(value, str):
        _refuse(value, "a rendered value")
    return value


@cache
def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # YAML and unit files, not HTML
        finalize=_finalize,
    )


def render(name: str, context: dict[str, Any]) -> str:
    """Render ``templates/<name>`` with ``context`` (a missing variable is an error, never blank).

    Raises ``RenderError`` when a value holds a control character.
    """
    try:
        check_context(context, "")
        return _environment(templates_dir()).get_template(name).render(**context)
    except RenderError as exc:
        raise RenderError(f"{name}: {exc}") from None
