"""``rbee engine``: build (once per feature set) and install the llama-cpp-python engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rbee.cli import exits
from rbee.engine.features import EngineBackend, local_feature_set
from rbee.engine.wheelcache import DEFAULT_CACHE, EngineBuildError, build_wheel, install_wheel
from rbee.spec.models import DeploySpec

app = typer.Typer(help="Build and install the inference engine (llama-cpp-python).", no_args_is_help=True)

DEFAULT_VERSION: str = DeploySpec.model_fields["llama_cpp_python"].default
"""The spec's default engine version (``deploy.llama_cpp_python``)."""


@app.command()
def build(
    backend: Annotated[str, typer.Option(help="cpu, cuda or metal.")] = "cpu",
    version: Annotated[str, typer.Option(help="llama-cpp-python version.")] = DEFAULT_VERSION,
    cache_dir: Annotated[Path, typer.Option(help="Wheel cache folder.")] = DEFAULT_CACHE,
    install: Annotated[bool, typer.Option(help="Also install the wheel into this Python.")] = False,
) -> None:
    """Print the path of the engine wheel for this machine, building it first if it is not cached."""
    if backend not in ("cpu", "cuda", "metal"):
        typer.echo(f"unknown backend {backend!r}; use cpu, cuda or metal", err=True)
        raise typer.Exit(exits.FAILURE)
    chosen: EngineBackend = backend  # type: ignore[assignment]
    features = local_feature_set(chosen, version)
    typer.echo(f"engine {features.key}: CMAKE_ARGS={' '.join(features.cmake_args)}", err=True)
    try:
        wheel = build_wheel(features, cache_dir)
    except EngineBuildError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None
    typer.echo(str(wheel))
    if install:
        raise typer.Exit(install_wheel(wheel))
