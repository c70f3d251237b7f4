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


def test_a_stale_host_lock_stops_plan_and_deploy_in_one_line(tmp_path) -> None:
    """A lock that no longer matches rbee's dependencies (here: none at all) is one line and exit 1, before any
    host is touched (inside pyinfra it would be a traceback per host)."""
    import subprocess
    import sys

    spec = tmp_path / "cluster.yaml"
    spec.write_text("cluster: c\nhosts:\n  - {name: a, address: 10.0.0.1}\n")
    code = (f"import rbee.deploy.host_lock as lock, pathlib; lock.LOCK_DIR = pathlib.Path({str(tmp_path)!r}); "
            "from rbee.cli.main import main; main()")  # fmt: skip
    for command in ("plan", "deploy"):
        done = subprocess.run([sys.executable, "-c", code, command, str(spec)], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"rbee {command}: the host lock does not match") and "rbee wheelhouse lock" in line
        assert "Traceback" not in done.stderr and done.stdout == ""
