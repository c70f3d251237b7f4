"""pyinfra inventory adapter: ``pyinfra inventory/inventory.py deploys/site.py``.

Reads the cluster spec named by ``$RBEE_SPEC`` (default: ``inventory/cluster.yaml``),
validates it and exposes its groups. An invalid spec stops here with every problem
listed (exit status 2), before any host is touched.
"""

import sys
from pathlib import Path

from rbee.spec import SpecError, load_spec
from rbee.spec.inventory import inventory_groups, spec_path_from_env

_spec_path = spec_path_from_env(Path(__file__).resolve().parent)
try:
    _spec = load_spec(_spec_path)
except SpecError as _exc:
    print(_exc.report(), file=sys.stderr)
    raise SystemExit(2) from None
except OSError as _exc:
    print(f"{_spec_path}: cannot read the cluster spec: {_exc.strerror}; set RBEE_SPEC=FILE", file=sys.stderr)
    raise SystemExit(1) from None

if _spec.deploy.on_unreachable == "stop":
    from pyinfra.context import config as _config

    _config.FAIL_PERCENT = 0  # any unreachable or failed host stops the whole deploy

_groups = inventory_groups(_spec, _spec_path)
queen = _groups["queen"]
hives = _groups["hives"]
