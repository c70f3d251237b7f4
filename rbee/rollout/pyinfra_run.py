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

from rbee.deploys.entry import path as entry_path


@dataclass
class PyinfraRun:
    """What a pyinfra run printed: its JSON document, its log and the preflight report."""

    returncode: int
    document: dict[str, Any]
    log: str
    preflight: dict[str, Any]


def run_pyinfra(
    spec: Path,
    *args: str,
    limit: list[str] | None = None,
    timeout_s: float = 1800,
    deploy: str = "site",
    inventory: str = "inventory",
    env: dict[str, str] | None = None,
) -> PyinfraRun:
    """``pyinfra --json [--limit H]... ARGS INVENTORY DEPLOY`` for ``spec``: the package's entry files.

    ``deploy`` and ``inventory`` name entries of ``rbee.deploys.entry`` (``site``, ``snapshot``, ``rollback``,
    ``decommission``; ``inventory``, ``prune_inventory``); ``env``: more environment. Pass ``-y`` to execute;
    without it (and with ``--dry``) pyinfra only detects changes. pyinfra runs in the spec's folder.
    """
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    limits = [arg for host in limit or [] for arg in ("--limit", host)]
    with tempfile.TemporaryDirectory(prefix="rbee-run-") as tmp:
        report = Path(tmp) / "preflight.json"
        environ = {**os.environ, **(env or {}), "RBEE_SPEC": str(spec.resolve()), "RBEE_PREFLIGHT_REPORT": str(report)}
        command = [pyinfra, "--json", *limits, *args, str(entry_path(inventory)), str(entry_path(deploy))]
        done = subprocess.run(
            command, cwd=spec.resolve().parent, env=environ, capture_output=True, text=True, timeout=timeout_s,
            check=False,
        )  # fmt: skip
        preflight = json.loads(report.read_text()) if report.exists() else {}
    try:
        document = json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        document = {}
    return PyinfraRun(done.returncode, document, done.stderr, preflight)
