"""Optional dependencies (the ``deploy``, ``engine``, ``dev`` extras): a command that lacks one stops with one line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import typer

from rbee.cli import exits


@dataclass(frozen=True)
class Extra:
    """A module some commands need, the distribution that provides it and the rbee extra that installs it."""

    module: str
    distribution: str
    extra: str
    script: str | None = None  # a command the module installs next to this Python, which rbee runs
    also: str = ""  # another way to get it, after the pip command

    def installed(self) -> bool:
        """Whether ``module`` can be imported (without importing it) and its script, if any, is there."""
        if find_spec(self.module) is None:
            return False
        return self.script is None or (Path(sys.executable).parent / self.script).exists()


PYINFRA = Extra("pyinfra", "pyinfra", "deploy", script="pyinfra")
PARAMIKO = Extra("paramiko", "paramiko", "deploy")
ENGINE = Extra("llama_cpp", "llama-cpp-python", "engine", also="rbee engine build --install")
UV = Extra("uv", "uv", "dev", script="uv", also="pip install uv")


def require(command: str, *extras: Extra) -> None:
    """Exit 2 (a usage error) with ``rbee COMMAND needs X: pip install 'rbee[EXTRA]'`` when one is missing."""
    for extra in extras:
        if not extra.installed():
            also = f" (or {extra.also})" if extra.also else ""
            typer.echo(f"rbee {command} needs {extra.distribution}: pip install 'rbee[{extra.extra}]'{also}", err=True)
            raise typer.Exit(exits.MISSING_DEPENDENCY)
