"""What a deploy would change, per host, from a pyinfra dry run (``rbee plan``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _short(name: str) -> str:
    """``rbee services | services: unit rbee-hive.service`` → ``services: unit rbee-hive.service``."""
    return name.split(" | ", 1)[-1]


@dataclass
class Plan:
    """Changes per host, hosts that cannot be deployed (with why), hosts not reached."""

    changes: dict[str, list[str]] = field(default_factory=dict)
    failing: dict[str, list[str]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """True when a deploy would change something."""
        return any(self.changes.values())


def build_plan(document: dict[str, Any], preflight: dict[str, Any], hosts: list[str]) -> Plan:
    """Read pyinfra's ``--dry --json`` document and the preflight report into a ``Plan``."""
    plan = Plan(changes={h: [] for h in hosts})
    for op in document.get("plan", []):
        names = sorted({_short(n) for n in op.get("names", [op.get("name", "?")])})
        label = " / ".join(names)
        for host in op.get("hosts_with_change", []):
            plan.changes.setdefault(host, []).append(label)
    answered = preflight.get("hosts", {})
    for host in hosts:
        row = answered.get(host)
        if row is None:
            plan.unreachable.append(host)
            plan.changes.pop(host, None)
        elif row.get("problems"):
            plan.failing[host] = list(row["problems"])
    return plan
