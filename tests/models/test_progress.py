"""FetchProgress and the rich progress-bar callback."""

from __future__ import annotations

import io

from rich.console import Console

from rbee.models import FetchProgress, progress_bar, rich_progress_callback


def test_fraction() -> None:
    assert FetchProgress("m", 50, 200, 1.0).fraction == 0.25
    assert FetchProgress("m", 50, None, 1.0).fraction is None


def test_rich_callback_drives_one_bar_per_model() -> None:
    console = Console(file=io.StringIO(), force_terminal=False, width=100)
    with progress_bar(console) as bar:
        callback = rich_progress_callback(bar)
        callback(FetchProgress("a", 0, 1000, 0.0))
        callback(FetchProgress("b", 10, None, 0.0))
        callback(FetchProgress("a", 1000, 1000, 500.0))
        callback(FetchProgress("b", 300, 600, 10.0, resumed_from=10))
        tasks = {task.description: task for task in bar.tasks}

    assert set(tasks) == {"a", "b (resumed)"}
    assert tasks["a"].completed == 1000 and tasks["a"].finished
    assert (tasks["b (resumed)"].completed, tasks["b (resumed)"].total) == (300, 600)
