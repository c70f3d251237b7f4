"""A command whose optional dependency is missing says so in one line with the install command, and exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee.cli.extras import ENGINE, PARAMIKO, PYINFRA
from tests.cli.conftest import rbee

EXAMPLE = str(Path(__file__).parents[2] / "inventory" / "cluster.example.yaml")
DEPLOY = "pip install 'rbee[deploy]'"
ENGINE_LINE = "rbee up needs llama-cpp-python: pip install 'rbee[engine]' (or rbee engine build --install)"


@pytest.mark.parametrize(
    ("blocked", "args", "line"),
    [
        ("pyinfra", ["plan", EXAMPLE], f"rbee plan needs pyinfra: {DEPLOY}"),
        ("pyinfra", ["plan", "--json", EXAMPLE], f"rbee plan needs pyinfra: {DEPLOY}"),
        ("pyinfra", ["status", EXAMPLE], f"rbee status needs pyinfra: {DEPLOY}"),
        ("pyinfra", ["deploy", EXAMPLE], f"rbee deploy needs pyinfra: {DEPLOY}"),
        ("paramiko", ["plan", EXAMPLE], f"rbee plan needs paramiko: {DEPLOY}"),
        ("paramiko", ["deploy", EXAMPLE], f"rbee deploy needs paramiko: {DEPLOY}"),
        ("paramiko", ["preflight", EXAMPLE], f"rbee preflight needs paramiko: {DEPLOY}"),
        ("llama_cpp", ["up"], ENGINE_LINE),
    ],
)
def test_missing_optional_dependency_is_one_line_and_exit_2(blocked: str, args: list[str], line: str) -> None:
    done = rbee(*args, block=blocked)
    assert done.returncode == 2, done.stderr
    assert done.stderr == line + "\n"
    assert done.stdout == ""


def test_the_check_comes_before_reading_the_spec(tmp_path: Path) -> None:
    done = rbee("plan", str(tmp_path / "absent.yaml"), block="pyinfra")
    assert done.returncode == 2 and "needs pyinfra" in done.stderr and "cannot read" not in done.stderr


def test_commands_without_the_extra_still_work() -> None:
    done = rbee("spec", "validate", "--quiet", EXAMPLE, block="pyinfra")
    assert done.returncode == 0, done.stderr
    assert rbee("--version", block="llama_cpp").returncode == 0


def test_installed_extras_pass_the_check() -> None:
    """The test environment has every extra (``dev`` lists pyinfra; the engine tests need llama-cpp-python)."""
    assert PYINFRA.installed() and PARAMIKO.installed() and ENGINE.installed()
