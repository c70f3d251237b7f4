"""Ask every host of a spec one read-only shell command, in parallel (pyinfra's ``fact server.Command``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rbee.deploys.entry import path as entry_path


def read_on_hosts(
    spec_file: Path, command: str, limit: list[str] | None = None, timeout_s: float = 300
) -> dict[str, str]:
    """Host name → what ``command`` printed, for each host of the spec (or of ``limit``) that answered.

    A host missing from the result was not reached (pyinfra printed why on its stderr).
    """
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    limits = [arg for host in limit or [] for arg in ("--limit", host)]
    env = {**os.environ, "RBEE_SPEC": str(spec_file.resolve())}
    argv = [pyinfra, "--json", *limits, str(entry_path("inventory")), "fact", "server.Command", f"command={command}"]
    done = subprocess.run(
        argv, cwd=spec_file.resolve().parent, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    try:
        facts = next(iter(json.loads(done.stdout).values()))
    except (json.JSONDecodeError, StopIteration, AttributeError):
        return {}
    return {str(host): str(text) for host, text in facts.items() if text is not None}
