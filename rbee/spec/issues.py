"""A problem found in a spec, and how it is printed: ``FILE:LINE:COL: path: message (got VALUE); hint``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rbee.spec.positions import Mark, Path_

_UNSET: Any = object()


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def format_path(path: Path_) -> str:
    """``("hosts", 1, "ssh", "port")`` → ``hosts[1].ssh.port``; the empty path is ``(root)``.

    A key that is not plain (``a b``, a newline, ...) is shown escaped: ``hosts[0]['a\\nb']``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            out += f"[{show(part)}]"
        else:
            out += f".{part}" if out else part
    return out or "(root)"


def show(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: escaped (``repr``-like, never raw) and at most ``limit`` characters."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class SpecIssue:
    """One thing wrong with a spec, located by its path in the document."""

    path: Path_
    message: str
    value: Any = _UNSET
    hint: str = ""
    at_key: bool = False
    kind: str = ""
    mark: Mark | None = field(default=None, compare=False)

    def render(self, filename: str) -> str:
        """The one-line form shown to the operator."""
        mark = self.mark or Mark(1, 1)
        text = f"{filename}:{mark.line}:{mark.col}: {format_path(self.path)}: {self.message}"
        if self.value is not _UNSET:
            text += f" (got {show(self.value)})"
        if self.hint:
            text += f"; {self.hint}"
        return text


class SpecError(Exception):
    """The spec has one or more problems; ``issues`` holds all of them, in file order."""

    def __init__(self, filename: str, issues: list[SpecIssue]) -> None:
        self.filename = filename
        self.issues = sorted(issues, key=lambda i: ((i.mark or Mark(0, 0)).line, (i.mark or Mark(0, 0)).col))
        super().__init__(self.report())

    def report(self) -> str:
        """Every issue, one per line."""
        return "\n".join(issue.render(self.filename) for issue in self.issues)
