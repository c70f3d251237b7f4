"""What a log line is about: the request on whose path it was written (its id, model and worker).

The queen binds a request's id and model when it takes the request, and the worker once its slot is
leased; the worker binds the id it got in ``X-Request-Id`` (the queen's), so the lines of one request carry
the same id on the queen and on the worker. The values live in :mod:`contextvars`: each HTTP request runs in
a task of its own, and a thread started with :func:`contextvars.copy_context` (a worker's generation) keeps
them. :class:`ContextFilter` copies them onto every log record (nothing when unbound).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar, Token

REQUEST_ID: ContextVar[str | None] = ContextVar("rbee_request_id", default=None)
MODEL: ContextVar[str | None] = ContextVar("rbee_model", default=None)
WORKER: ContextVar[str | None] = ContextVar("rbee_worker", default=None)

#: Record attribute → the variable it comes from (the JSON field names).
FIELDS: dict[str, ContextVar[str | None]] = {"request_id": REQUEST_ID, "model": MODEL, "worker": WORKER}


def bind(*, request_id: str | None = None, model: str | None = None, worker: str | None = None) -> None:
    """Bind the given values for the rest of the current task (or thread's context); None leaves one as it is."""
    for var, value in ((REQUEST_ID, request_id), (MODEL, model), (WORKER, worker)):
        if value is not None:
            var.set(value)


@contextlib.contextmanager
def request(request_id: str, model: str | None = None) -> Iterator[None]:
    """Bind a request (its id, its model) inside the block; everything bound meanwhile is unbound after it."""
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = [
        (var, var.set(var.get())) for var in FIELDS.values()
    ]
    bind(request_id=request_id, model=model)
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds the bound ``request_id``, ``model`` and ``worker`` to each record (a handler's filter: sees every line).

    ``static``: values for records where nothing is bound (a worker process: its own model and id).
    """

    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in FIELDS.items():
            value = var.get() or self.static.get(name)
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True
