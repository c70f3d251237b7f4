"""Run the pyinfra deploy of a spec as a subprocess (the same command an operator types)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbee.deploy.wheelhouse import project_root


@dataclass
class PyinfraRun:
    """What a pyinfra run printed: its JSON document, its log and the preflight report."""

    returncode: int
    document: dict[str, Any]
    log: str
    preflight: dict[str, Any]


def run_pyinfra(
    spec: Path, *args: str, limit: list[str] | None = None, timeout_s: float = 1800, deploy: str = "deploys/site.py"
) -> PyinfraRun:
    """``pyinfra --json [--limit H]... ARGS inventory/inventory.py deploys/site.py`` for ``spec``.

    Pass ``-y`` to execute; without it (and with ``--dry``) pyinfra only detects changes.
    """
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    limits = [arg for host in limit or [] for arg in ("--limit", host)]
    with tempfile.TemporaryDirectory(prefix="rbee-run-") as tmp:
        report = Path(tmp) / "preflight.json"
        env = {**os.environ, "RBEE_SPEC": str(spec.resolve()), "RBEE_PREFLIGHT_REPORT": str(report)}
        command = [pyinfra, "--json", *limits, *args, "inventory/inventory.py", deploy]
        done = subprocess.run(
            command, cwd=project_root(), env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        preflight = json.loads(report.read_text()) if report.exists() else {}
    try:
        document = json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        document = {}
    return PyinfraRun(done.returncode, document, done.stderr, preflight)
