"""Running the real ``rbee`` command as a user does: a subprocess, stdout piped, stdout and stderr apart."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.services import RBEE


def rbee(*args: str, env: dict[str, str] | None = None, block: str | None = None,
         columns: int | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``rbee ARGS`` with stdout a pipe (a file or ``| jq`` as reader) and ``COLUMNS`` unset unless ``columns``.

    ``block``: a module made unimportable first (``sys.modules[NAME] = None``: ``import NAME`` raises
    ImportError), as on a machine without that optional dependency.
    """
    environ = {key: value for key, value in (env or os.environ).items() if key != "COLUMNS"}
    if columns is not None:
        environ["COLUMNS"] = str(columns)
    if block is None:
        command = [RBEE, *args]
    else:
        code = f"import sys; sys.modules[{block!r}] = None; from rbee.cli.main import main; main()"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)
