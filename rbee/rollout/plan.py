"""What a deploy would change, per host, from a pyinfra dry run and its preflight report (``rbee plan``).

The preflight of ``rbee plan``'s dry run reports each deployable host's changes by kind
(``rbee.deploy.change_report.HostChanges``, redacted); pyinfra's ``--dry --json`` document adds the names of
the operations that would change something (``changes``, kept for scripts that read them). ``Plan.as_json`` is
the documented schema of ``rbee plan --json`` (``docs/plan.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rbee.deploy.change_report import HostChanges
from rbee.deploy.redact import Redactor

SCHEMA_VERSION = 1
"""``rbee plan --json``'s ``version``: raised when a key changes meaning or goes away (new keys keep it)."""

HostStatus = Literal["ok", "changes", "failing", "unreachable"]


class PruneHost(BaseModel):
    """A host that runs rbee but left the spec: what a deploy would stop and remove there (``rbee.rollout.prune``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    removes: list[str] = []
    forget: bool = False
    """Gone for good (``--forget``): nothing is sent to it; its hive is deregistered and it leaves the record (what
    still runs there is the operator's to stop). ``removes`` is what pruning would have removed."""


def _short(name: str) -> str:
    """``rbee services | services: unit rbee-hive.service`` → ``services: unit rbee-hive.service``."""
    return name.split(" | ", 1)[-1]


@dataclass
class Plan:
    """Per host: its changes by kind (``hosts``), the operations that change something (``changes``), why it
    cannot be deployed (``failing``), or that it was not reached (``unreachable``); hosts to prune (``prune``)."""

    changes: dict[str, list[str]] = field(default_factory=dict)
    failing: dict[str, list[str]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)
    hosts: dict[str, HostChanges] = field(default_factory=dict)
    prune: list[PruneHost] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """True when a deploy would change something."""
        return any(self.changes.values()) or any(h.pending for h in self.hosts.values()) or bool(self.prune)

    def names(self) -> list[str]:
        """Every host of the spec, in spec order."""
        return list(dict.fromkeys([*self.order, *self.changes, *self.failing, *self.unreachable]))

    def status(self, host: str) -> HostStatus:
        if host in self.unreachable:
            return "unreachable"
        if host in self.failing:
            return "failing"
        found = self.hosts.get(host)
        return "changes" if self.changes.get(host) or (found is not None and found.pending) else "ok"

    def as_json(self, ssh: dict[str, Any] | None = None) -> dict[str, Any]:
        """``rbee plan --json`` (``ssh``: the SSH check of each unreachable host)."""
        hosts = {
            name: {
                "status": self.status(name),
                "problems": self.failing.get(name, []),
                "changes": found.model_dump(mode="json") if (found := self.hosts.get(name)) else None,
                "operations": self.changes.get(name, []),
            }
            for name in self.names()
        }
        return {
            "version": SCHEMA_VERSION,
            "pending": self.pending,
            "hosts": hosts,
            "prune": [p.model_dump(mode="json") for p in self.prune],
            "changes": self.changes,
            "failing": self.failing,
            "unreachable": self.unreachable,
            "ssh": ssh or {},
        }

    def redacted(self, redactor: Redactor) -> Plan:
        """The same plan with every text passed through ``redactor`` (a second net: the preflight redacted it)."""

        def clean(value: Any) -> Any:
            if isinstance(value, str):
                return redactor.text(value)
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return Plan(
            changes=clean(self.changes),
            failing=clean(self.failing),
            unreachable=list(self.unreachable),
            hosts={h: HostChanges.model_validate(clean(c.model_dump())) for h, c in self.hosts.items()},
            prune=[PruneHost.model_validate(clean(p.model_dump())) for p in self.prune],
            order=list(self.order),
        )


def build_plan(document: dict[str, Any], preflight: dict[str, Any], hosts: list[str]) -> Plan:
    """Read pyinfra's ``--dry --json`` document and the preflight report into a ``Plan``."""
    plan = Plan(changes={h: [] for h in hosts}, order=list(hosts))
    for op in document.get("plan", []):
        names = sorted({_short(n) for n in op.get("names", [op.get("name", "?")])})
        label = " / ".join(names)
        for host in op.get("hosts_with_change", []):
            plan.changes.setdefault(host, []).append(label)
    answered = preflight.get("hosts", {})
    reported = preflight.get("plans", {})
    for host in hosts:
        row = answered.get(host)
        if row is None:
            plan.unreachable.append(host)
            plan.changes.pop(host, None)
        elif row.get("problems"):
            plan.failing[host] = list(row["problems"])
        elif host in reported:
            try:
                plan.hosts[host] = HostChanges.model_validate(reported[host])
            except ValidationError:
                continue  # shown by its operations' names alone
    return plan
