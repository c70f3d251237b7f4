"""Resolve placements to hosts: which hosts may run a model, and which ones will."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rbee.spec.models import ClusterSpec, HostSpec, PlacementSpec

_DEVICE_BACKENDS = {"cpu": {"auto", "cpu", "cuda", "metal"}, "metal": {"auto", "metal"}, "cuda": {"auto", "cuda"}}


def device_fits(device: str, host: HostSpec) -> bool:
    """Whether a host's backend can serve a placement's device (``auto`` fits every host)."""
    if device == "auto":
        return True
    kind = device.split(":", 1)[0]
    return host.backend in _DEVICE_BACKENDS[kind]


def eligible_hosts(spec: ClusterSpec, placement: PlacementSpec) -> list[HostSpec]:
    """Hosts named by the placement or carrying one of its labels (every host when it names none)."""
    named = set(placement.hosts)
    labels = set(placement.labels)
    select_all = not named and not labels
    return [
        h
        for h in spec.hosts
        if (select_all or h.name in named or labels.intersection(h.labels)) and device_fits(placement.device, h)
    ]


@dataclass(frozen=True)
class Assignment:
    """One worker a hive keeps running."""

    model_id: str
    host: str
    slots: int
    device: str


def assign(spec: ClusterSpec) -> list[Assignment]:
    """Spread each placement's replicas over its eligible hosts, least loaded first, one per host."""
    load: Counter[str] = Counter()
    out: list[Assignment] = []
    for placement in spec.placements:
        candidates = sorted(eligible_hosts(spec, placement), key=lambda h: load[h.name])
        for host in candidates[: placement.replicas]:
            load[host.name] += 1
            out.append(Assignment(placement.model, host.name, placement.slots, placement.device))
    return out


def models_on(spec: ClusterSpec, host: str) -> list[str]:
    """Ids of the models a host must hold (in spec order, each once)."""
    wanted = {a.model_id for a in assign(spec) if a.host == host}
    return [m.id for m in spec.models if m.id in wanted]
