"""A unified diff of a small text file, from its bytes on a host to its planned text, for people to review.

Both sides are made printable first (control characters as ``\\xNN``: a host's file could otherwise move a
terminal's cursor), then redacted (``rbee.deploy.redact``), then compared with ``difflib``. Files over
``MAX_TEXT_BYTES`` and contents that are not UTF-8 text are not compared; a diff over ``MAX_DIFF_LINES``
is cut. ``TextDiff.note`` says why a diff is missing or cut.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from rbee.deploy.redact import Redactor

MAX_TEXT_BYTES = 128 * 1024
"""Larger files are not read from the host nor compared (rbee's configs and units are a few KiB)."""

MAX_DIFF_LINES = 400
"""A longer diff is cut there (the note says so)."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Control characters, and the Unicode marks that reorder or break lines (text that reads otherwise than it is)."""


@dataclass(frozen=True)
class TextDiff:
    """A unified diff (``""``: none shown) and why none or only part of it is shown (``""``: all of it)."""

    diff: str
    note: str = ""


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline written as ``\\xNN`` (``\\r`` too), and each
    bidirectional or line separator mark as ``\\uNNNN``."""
    return _CONTROL.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def decode(data: bytes) -> str | None:
    """``data`` as text, or None when it is not UTF-8 or holds a NUL byte (a binary file)."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_diff(
    name: str, current: bytes | None, planned: str, redactor: Redactor, *, current_size: int | None = None
) -> TextDiff:
    """The diff from ``current`` (the bytes on the host; None: the file is missing) to ``planned``.

    ``name``: how the headers name the file (``h3:/etc/systemd/system/rbee-hive.service``);
    ``current_size``: the file's size on the host when ``current`` holds only its first bytes.
    """
    size = current_size if current_size is not None else len(current or b"")
    if size > MAX_TEXT_BYTES or len(planned.encode()) > MAX_TEXT_BYTES:
        return TextDiff("", f"not compared: over {MAX_TEXT_BYTES // 1024} KiB")
    before = "" if current is None else decode(current)
    if before is None:
        return TextDiff("", "not compared: the file on the host is not UTF-8 text")
    old, new = (redactor.text(printable(t)).splitlines() for t in (before, planned))
    lines = list(difflib.unified_diff(old, new, f"{name} (on the host)" if current is not None else "/dev/null",
                                      f"{name} (planned)", lineterm=""))  # fmt: skip
    if not lines:
        if before != planned:
            return TextDiff("", "differs only in line endings, the final newline or a redacted secret")
        return TextDiff("", "")
    if len(lines) > MAX_DIFF_LINES:
        return TextDiff("\n".join(lines[:MAX_DIFF_LINES]), f"cut at {MAX_DIFF_LINES} of {len(lines)} lines")
    return TextDiff("\n".join(lines))
