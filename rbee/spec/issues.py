"""A problem found in a spec, and how it is printed: ``FILE:LINE:COL: path: message (got VALUE); hint``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rbee.spec.positions import Mark, Path_

_UNSET: Any = object()


def format_path(path: Path_) -> str:
    """``("hosts", 1, "ssh", "port")`` → ``hosts[1].ssh.port``; the empty path is ``(root)``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
            text += f" (got {_show(self.value)})"
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
