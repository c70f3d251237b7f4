"""Entry point of the ``rbee`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from rbee.cli import (
    ansible_cmd,
    cluster_cmd,
    engine_cmd,
    preflight_cmd,
    release_cmd,
    rollout_cmd,
    spec_cmd,
    testhosts_cmd,
    up_cmd,
    wheelhouse_cmd,
)
from rbee.cli.environment import epilog
from rbee.cli.top import top
from rbee.cli.version import show_version

app = typer.Typer(
    name="rbee",
    help="rbee: a private LLM inference cluster from a few machines, kept in shape declaratively.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    epilog=epilog(),
)


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=show_version, is_eager=True, help="Print rbee's version and exit."),
    ] = False,
) -> None:
    """Options before the command."""


spec_cmd.app.command("ansible-inventory")(ansible_cmd.ansible_inventory)
spec_cmd.app.command("prepare")(ansible_cmd.prepare_control)
app.add_typer(spec_cmd.app, name="spec")
app.add_typer(engine_cmd.app, name="engine")
app.command("up")(up_cmd.up)
app.command("infer")(cluster_cmd.infer)
app.command("top")(top)
app.command("preflight")(preflight_cmd.preflight)
app.command("plan")(rollout_cmd.plan)
app.command("status")(rollout_cmd.status)
app.command("deploy")(rollout_cmd.deploy)
app.command("releases")(release_cmd.releases)
app.command("rollback")(release_cmd.rollback)
app.add_typer(cluster_cmd.workers_app, name="workers")
app.add_typer(cluster_cmd.hives_app, name="hives")
app.add_typer(cluster_cmd.models_app, name="models")
app.add_typer(testhosts_cmd.app, name="testhosts")
app.add_typer(wheelhouse_cmd.app, name="wheelhouse")


def main() -> None:
    """Run the CLI."""
    app()
