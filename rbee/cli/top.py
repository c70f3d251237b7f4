"""``rbee top``: a live terminal view of the cluster, from the queen's dashboard state (``GET /ui/api/state``)."""

from __future__ import annotations

import signal
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from rbee.cli import exits
from rbee.cli.cluster_cmd import ApiKey, QueenUrl, _fail, _key
from rbee.cli.keys import KeyReader
from rbee.cli.output import stdout_console
from rbee.cli.top_view import frame
from rbee.client import QueenClient, QueenError

QUIT_KEYS = "qQ"


def _view(client: QueenClient, footer: str) -> RenderableType:
    """The next frame; a queen that does not answer is a line saying so (the view keeps trying)."""
    try:
        return frame(client.dashboard(), client.base_url, footer)
    except QueenError as exc:
        return Text.assemble((f"rbee top: {exc} [{exc.code}]\n", "bold red"), ("retrying… " + footer, "dim"))


def top(
    queen: QueenUrl = None,
    api_key: ApiKey = None,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (for scripts).")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between two refreshes.")] = 1.0,
) -> None:
    """Live view of hosts, GPUs, workers, slots, queues and request rates; q or Ctrl-C quits."""
    with QueenClient(queen, _key(api_key)) as client:
        try:
            state = client.dashboard()  # a wrong URL or key fails here, at once, also without --once
        except QueenError as exc:
            raise _fail(exc) from None
        if once:
            stdout_console().print(frame(state, client.base_url))
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
        footer = f"q quits · every {interval:g}s"
        try:
            with KeyReader() as keys, Live(console=Console(highlight=False), screen=True, auto_refresh=False) as live:
                while True:
                    live.update(_view(client, footer), refresh=True)
                    if keys.wait(interval, QUIT_KEYS):
                        break
        except KeyboardInterrupt:
            pass
    raise typer.Exit(exits.OK)
