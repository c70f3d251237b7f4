"""The bridge from the collection's controller plugins to rbee: find a Python that imports rbee, run a helper.

The spec, the host plans, wheelhouses, engine wheels and models are rbee's work (``rbee.cli.ansible_cmd``);
the collection only calls it, in a subprocess, so Ansible's own Python does not need rbee (pipx or
distro Ansible next to a pipx or venv rbee). Without any rbee the plugins stop with ``NO_RBEE``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError

NO_RBEE = (
    "rbee.cluster needs rbee on the control machine: {why}; `pip install rbee` (into Ansible's Python, or any "
    "environment with `rbee` on PATH), or point RBEE_CONTROL_PYTHON (or rbee_control_python) at a Python that has it"
)
ENV = "RBEE_CONTROL_PYTHON"
HELPERS = ("probe", "models", "plan", "wheelhouse", "wheelsync", "engine", "record", "health", "inventory-json")


class RbeeHelperError(AnsibleError):  # type: ignore[misc]
    """A helper failed; the message is its own (a located spec error, a model that cannot be fetched...)."""


def interpreter_of(script: str) -> str:
    """The Python of a console script (``rbee`` of a venv, pipx or pip): its sibling ``python``, else its ``#!``."""
    path = Path(script).resolve()
    sibling = path.parent / "python"
    if sibling.exists():
        return str(sibling)
    with path.open("rb") as head:
        line = head.readline(512).decode("utf-8", "replace")
    words = line[2:].split() if line.startswith("#!") else []
    if words[:1] == ["/usr/bin/env"] and len(words) > 1:
        return shutil.which(words[1]) or words[1]
    if not words:
        raise AnsibleError(NO_RBEE.format(why=f"{script} is not a Python console script"))
    return words[0]


def control_python(configured: str = "") -> str:
    """The Python that runs rbee's helpers: ``configured``, else ``$RBEE_CONTROL_PYTHON``, else Ansible's own when it
    imports rbee, else the one of ``rbee`` on PATH."""
    if configured or os.environ.get(ENV):
        return configured or os.environ[ENV]
    if importlib.util.find_spec("rbee") is not None:
        return sys.executable
    found = shutil.which("rbee")
    if found is None:
        raise AnsibleError(NO_RBEE.format(why=f"{sys.executable} cannot import rbee and no `rbee` is on PATH"))
    return interpreter_of(found)


def run_helper(python: str, helper: str, data: Any = None, args: tuple[str, ...] = ()) -> tuple[Any, list[str]]:
    """``python -m rbee.cli.ansible_cmd HELPER ARGS``, ``data`` as JSON on stdin: its JSON reply and stderr lines."""
    if helper not in HELPERS:
        raise AnsibleError(f"rbee.cluster: unknown helper {helper!r}; one of {', '.join(HELPERS)}")
    command = [python, "-P", "-m", "rbee.cli.ansible_cmd", helper, *args]  # -P: never rbee from the current folder
    stdin = json.dumps({} if data is None else data)
    try:
        run = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise AnsibleError(NO_RBEE.format(why=f"{python} cannot run: {exc.strerror or exc}")) from None
    lines = run.stderr.splitlines()
    missing = re.findall(r"No module named '[^']+'", run.stderr)
    if run.returncode != 0 and missing:
        raise AnsibleError(NO_RBEE.format(why=f"{python} cannot import rbee ({missing[-1]})"))
    if run.returncode != 0:
        problem = "\n".join(line for line in lines if not line.startswith("--> ")) or f"exit status {run.returncode}"
        raise RbeeHelperError(f"rbee {helper}: {problem}")
    try:
        return json.loads(run.stdout), lines
    except ValueError:
        raise RbeeHelperError(f"rbee {helper}: not JSON: {run.stdout[:200]!r}") from None
