"""How queen, hive and worker log: plain text lines, or one JSON object per line (``--log-format json``).

The format is the ``--log-format`` flag, else ``$RBEE_LOG_FORMAT`` (the deployed units set it from the spec's
``runtime.log_format``; a hive's workers inherit it), else ``text``. A JSON line holds ``time`` (ISO 8601,
UTC), ``level``, ``logger``, ``message``, ``service``, and on a request's path ``request_id``, ``model`` and
``worker`` (:mod:`rbee_runtime.common.log_context`); a traceback is the ``exc_info`` field of its line.
uvicorn's own loggers go through the same handler (the services give uvicorn ``log_config=None``), so every
line of the process has the format.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from rbee_runtime.common.log_context import ContextFilter

LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "RBEE_LOG_FORMAT"

class LogFormatError(ValueError):
    """``$RBEE_LOG_FORMAT`` holds something else than ``text`` or ``json``."""


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-format text|json`` (default: ``$RBEE_LOG_FORMAT``, else text)."""
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=None,
        help=f"text (default) or json: one JSON object per line (default: ${LOG_FORMAT_ENV}, else text)",
    )  # fmt: skip


def log_format(flag: str | None) -> str:
    """The format to use: ``flag`` when given, else ``$RBEE_LOG_FORMAT``, else ``text``."""
    if flag is not None:
        return flag
    chosen = os.environ.get(LOG_FORMAT_ENV, "").strip() or "text"
    if chosen not in LOG_FORMATS:
        shown = chosen if len(chosen) <= 40 else chosen[:40] + "…"
        raise LogFormatError(f"${LOG_FORMAT_ENV} must be text or json, got {shown!r}")
    return chosen


class JsonLines(JsonFormatter):
    """python-json-logger's formatter: ``time`` first, as ISO 8601 UTC with milliseconds."""

    def __init__(self, service: str) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's colored copy of a message
        )  # fmt: skip

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def configure_logging(
    level: str, fmt: str, *, service: str, label: str = "", static: dict[str, str] | None = None
) -> None:
    """Log to stderr at ``level`` in format ``fmt`` (``text``: ``label`` after the level; ``json``: ``service``
    in each line). ``static``: ``request_id``/``model``/``worker`` for lines where none is bound."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(static))
    if fmt == "json":
        handler.setFormatter(JsonLines(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {label}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
