"""The pyinfra inventory of a cluster spec: ``groups()`` reads, validates and groups it (``queen``, ``hives``).

The spec is ``$RBEE_SPEC``, else ``cluster.yaml`` in the given folder. An invalid spec stops here with every
problem listed (exit status 2), before any host is touched. Every host is named as in the spec, also one on this
machine (``@rbee-local/NAME``: ``rbee.deploys.local``), so ``pyinfra --limit NAME`` selects it. An inventory file
is two lines::

    from rbee.deploys.inventory import groups
    queen, hives = groups()
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

from rbee.spec import ClusterSpec, SpecError, load_spec
from rbee.spec.inventory import LOCAL_CONNECTOR, HostEntry, inventory_groups, spec_path_from_env


def _check_local_connector(spec: ClusterSpec) -> None:
    """A spec with a host on this machine needs rbee's ``rbee-local`` connector registered (``rbee.deploys.local``)."""
    local = [h.name for h in spec.hosts if h.is_local]
    if local and not entry_points(group="pyinfra.connectors", name=LOCAL_CONNECTOR):
        print(f"{', '.join(local)}: a host on this machine needs rbee's pyinfra connector {LOCAL_CONNECTOR}, which "
              "this installation of rbee does not register; install rbee again (pip install 'rbee[deploy]', or "
              "pip install -e . in a checkout)", file=sys.stderr)  # fmt: skip
        raise SystemExit(1)


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
    _check_local_connector(spec)
    found = inventory_groups(spec, spec_path)
    return found["queen"], found["hives"]
