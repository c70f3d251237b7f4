"""The files pyinfra runs, shipped inside the package; ``python -m rbee.deploys.entry NAME`` prints one's path::

    pyinfra "$(python -m rbee.deploys.entry inventory)" "$(python -m rbee.deploys.entry site)"

pyinfra takes an inventory and deploys as files; these are the package's own, each a thin call into
``rbee.deploys``. ``path(name)`` finds one wherever rbee is installed (a checkout or a wheel).
"""

from pathlib import Path

ENTRIES = ("inventory", "site", "snapshot", "rollback", "prune_inventory", "decommission")


def path(name: str) -> Path:
    """The file of entry ``name`` (one of ``ENTRIES``)."""
    if name not in ENTRIES:
        raise ValueError(f"no pyinfra entry file {name!r}; known: {', '.join(ENTRIES)}")
    return Path(__file__).resolve().parent / f"{name}.py"
