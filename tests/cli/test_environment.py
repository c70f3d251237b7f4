"""``rbee --help`` lists every environment variable rbee reads, and the list stays complete."""

from __future__ import annotations

import re
from pathlib import Path

from rbee.cli import environment
from rbee.cli.environment import ENVIRONMENT, INTERNAL
from tests.cli.conftest import rbee

_NAME = re.compile(r"[\"'`]((?:RBEE|HF)_[A-Z][A-Z0-9_]*)[\"'`]")


def _names_in_source() -> set[str]:
    root = Path(environment.__file__).resolve().parents[1]  # the rbee package
    return {m.group(1) for path in root.rglob("*.py") for m in _NAME.finditer(path.read_text())}


def test_every_variable_the_code_reads_is_documented() -> None:
    found = _names_in_source()
    assert "RBEE_QUEEN_URL" in found  # the scan works
    undocumented = found - ENVIRONMENT.keys() - INTERNAL
    assert not undocumented, f"add to rbee/cli/environment.py ENVIRONMENT (or INTERNAL): {sorted(undocumented)}"
    stale = (ENVIRONMENT.keys() | INTERNAL) - found
    assert not stale, f"no longer read anywhere: {sorted(stale)}"


def test_help_lists_them() -> None:
    done = rbee("--help", columns=200)
    assert done.returncode == 0, done.stderr
    for name in ENVIRONMENT:
        assert name in done.stdout
    assert "RBEE_PREFLIGHT_REPORT" not in done.stdout


def test_queen_option_names_its_variable() -> None:
    done = rbee("workers", "ls", "--help", columns=200)
    assert done.returncode == 0, done.stderr
    assert "env var: RBEE_QUEEN_URL" in done.stdout
