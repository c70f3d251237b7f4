"""``rbee --version`` / ``-V``: rbee's installed version and the Python running it."""

from __future__ import annotations

import platform
from importlib.metadata import version

import pytest

from tests.cli.conftest import rbee


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_rbee_and_python_and_exits_0(flag: str) -> None:
    done = rbee(flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"rbee {version('rbee')} (Python {platform.python_version()})\n"
    assert done.stderr == ""


def test_version_wins_over_a_command() -> None:
    done = rbee("--version", "workers", "ls")
    assert done.returncode == 0 and done.stdout.startswith("rbee ")


def test_help_lists_the_option() -> None:
    done = rbee("--help")
    assert done.returncode == 0 and "--version" in done.stdout and "-V" in done.stdout
