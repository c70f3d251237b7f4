"""Entry point of the ``rbee`` command."""

from __future__ import annotations

import typer

from rbee.cli import engine_cmd, spec_cmd

app = typer.Typer(
    name="rbee",
    help="rbee: a private LLM inference cluster from a few machines, kept in shape declaratively.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(spec_cmd.app, name="spec")
app.add_typer(engine_cmd.app, name="engine")


def main() -> None:
    """Run the CLI."""
    app()
