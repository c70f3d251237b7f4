"""Progress of a model fetch, and a rich progress bar for the CLI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """One progress report of a transfer into the cache (sent at most every few hundred ms, and at the end)."""

    model_id: str
    bytes_done: int
    """Bytes in the ``.part`` file so far (resumed bytes included)."""
    bytes_total: int | None
    """Size of the whole file, when the server told it."""
    bytes_per_s: float
    """Average speed of the current attempt."""
    resumed_from: int = 0
    """Offset the current attempt started from (0: from the beginning)."""

    @property
    def fraction(self) -> float | None:
        """Share done, from 0 to 1, when the size is known."""
        if not self.bytes_total:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)


ProgressCallback = Callable[[FetchProgress], None]


def progress_bar(console: Console | None = None, *, transient: bool = False) -> Progress:
    """A rich progress display with one download bar per model (use it as a context manager)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def rich_progress_callback(bar: Progress) -> ProgressCallback:
    """A ``progress`` callback for :func:`rbee.models.fetch_model` that drives ``bar`` (thread-safe).

    Usage::

        with progress_bar() as bar:
            fetch_model(model, cache, progress=rich_progress_callback(bar))
    """
    tasks: dict[str, TaskID] = {}
    lock = threading.Lock()

    def on_progress(event: FetchProgress) -> None:
        description = event.model_id
        if event.resumed_from:
            description += " (resumed)"
        with lock:
            task = tasks.get(event.model_id)
            if task is None:
                tasks[event.model_id] = bar.add_task(description, total=event.bytes_total, completed=event.bytes_done)
            else:
                bar.update(task, description=description, total=event.bytes_total, completed=event.bytes_done)

    return on_progress
