"""A cluster spec (``cluster.yaml``) whose hosts are test hosts, for deploy tests through the real adapter.

For example::

    spec = spec_for_hosts(["h1", "h2"], cluster="t", queen_host="h1",
                          models_yaml="- {id: tiny, source: file:///m/tiny.gguf}")
    Path("cluster.yaml").write_text(spec)   # RBEE_SPEC=cluster.yaml pyinfra inventory/inventory.py ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from rbee.testhosts import naming
from rbee.testhosts.paths import Paths


def _fragment(text: str, key: str) -> Any:
    """Parse a YAML fragment given either as the section's value or as ``key: value``."""
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, dict) and set(value) == {key}:
        return value[key]
    return value


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def host_entry(name: str, paths: Paths | None = None, *, user: str = "root") -> dict[str, Any]:
    """One ``hosts:`` item: the host's address, SSH with the test key, host keys not checked, CPU backend."""
    key = (paths or Paths.default()).key
    return {
        "name": name,
        "address": naming.address(name),
        "ssh": {"user": user, "key": str(key), "known_hosts_file": "/dev/null"},
        "backend": "cpu",
    }


def spec_for_hosts(
    names: Sequence[str],
    *,
    cluster: str,
    queen_host: str,
    models_yaml: str = "",
    placements_yaml: str = "",
    extra_yaml: str = "",
    paths: Paths | None = None,
    user: str = "root",
) -> str:
    """The YAML text of a cluster spec over the test hosts ``names``.

    ``models_yaml`` / ``placements_yaml`` are the ``models:`` / ``placements:`` lists (with or without
    their key); ``extra_yaml`` is a mapping merged into the top level (e.g. ``deploy: {prefix: /opt/x}``,
    ``queen: {port: 9000}``; nested mappings are merged, lists replaced).
    """
    if queen_host not in names:
        raise ValueError(f"queen_host {queen_host!r} is not one of the hosts {list(names)}")
    spec: dict[str, Any] = {
        "version": 1,
        "cluster": cluster,
        "queen": {"host": queen_host},
        "hosts": [host_entry(n, paths, user=user) for n in names],
    }
    for key, text in (("models", models_yaml), ("placements", placements_yaml)):
        value = _fragment(text, key)
        if value is not None:
            spec[key] = value
    extra = _fragment(extra_yaml, "")
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValueError("extra_yaml must be a YAML mapping")
        _merge(spec, extra)
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)
