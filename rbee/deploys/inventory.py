"""The pyinfra inventory of a cluster spec: ``groups()`` reads, validates and groups it (``queen``, ``hives``).

The spec is ``$RBEE_SPEC``, else ``cluster.yaml`` in the given folder. An invalid spec stops here with every
problem listed (exit status 2), before any host is touched. An inventory file is two lines::

    from rbee.deploys.inventory import groups
    queen, hives = groups()
"""

from __future__ import annotations

import sys
from pathlib import Path

from rbee.spec import SpecError, load_spec
from rbee.spec.inventory import HostEntry, inventory_groups, spec_path_from_env


def groups(default_dir: Path | None = None) -> tuple[list[HostEntry], list[HostEntry]]:
    """The spec's ``(queen, hives)`` groups; ``default_dir`` (else the working folder) holds ``cluster.yaml``."""
    spec_path = spec_path_from_env(default_dir or Path.cwd())
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        print(exc.report(), file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"{spec_path}: cannot read the cluster spec: {exc.strerror}; set RBEE_SPEC=FILE", file=sys.stderr)
        raise SystemExit(1) from None
    if spec.deploy.on_unreachable == "stop":
        from pyinfra.context import config

        config.FAIL_PERCENT = 0  # any unreachable or failed host stops the whole deploy
    found = inventory_groups(spec, spec_path)
    return found["queen"], found["hives"]
