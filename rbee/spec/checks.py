"""Rules that span several fields of a spec; each returns every problem it finds."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rbee.spec.issues import SpecIssue
from rbee.spec.models import ClusterSpec
from rbee.spec.placement import device_fits, eligible_hosts


@dataclass(frozen=True)
class RawNames:
    """Names written in the file, including those of items too broken to validate.

    Cross-references to such items are not reported again; the item's own problem is.
    """

    hosts: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    hosts_complete: bool = True


def did_you_mean(word: str, choices: list[str]) -> str:
    """``did you mean 'x'?`` for the closest choice, else the list of choices."""
    choices = list(dict.fromkeys(choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"choose one of: {', '.join(choices)}" if choices else ""


def _duplicates(section: str, key: str, values: list[str], what: str) -> Iterator[SpecIssue]:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            yield SpecIssue(
                (section, i, key), f"duplicate {what} (first used by {section}[{seen[value]}])", value,
                f"give every {what.split()[0]} its own {what.split()[1]}",
            )  # fmt: skip
        seen.setdefault(value, i)


def _unique_names(spec: ClusterSpec) -> Iterator[SpecIssue]:
    yield from _duplicates("hosts", "name", [h.name for h in spec.hosts], "host name")
    yield from _duplicates("models", "id", [m.id for m in spec.models], "model id")


RESERVED_HOST_NAMES = ("queen", "hives", "all", "ungrouped")
"""Names of the inventory groups (pyinfra's and Ansible's ``queen``, ``hives``; Ansible's ``all``, ``ungrouped``): a
host so named would make ``--limit NAME`` (and ``rbee deploy``'s batches) select the whole group."""


def _reserved_names(spec: ClusterSpec) -> Iterator[SpecIssue]:
    for i, host in enumerate(spec.hosts):
        if host.name in RESERVED_HOST_NAMES:
            yield SpecIssue(
                ("hosts", i, "name"), "reserved: the name of an inventory group, --limit would select the group",
                host.name, f"choose another name (reserved: {', '.join(RESERVED_HOST_NAMES)})",
            )  # fmt: skip


def _queen_host(spec: ClusterSpec, raw: RawNames) -> Iterator[SpecIssue]:
    names = [h.name for h in spec.hosts]
    if spec.queen.host is not None and spec.queen.host not in names and spec.queen.host not in raw.hosts:
        yield SpecIssue(
            ("queen", "host"),
            "the queen must run on one of the hosts",
            spec.queen.host,
            did_you_mean(spec.queen.host, names),
        )


def _ports(spec: ClusterSpec) -> Iterator[SpecIssue]:
    taken: dict[tuple[str, int], str] = {}
    services: list[tuple[tuple[str | int, ...], str, int, str]] = []
    queen_host = spec.queen.host or spec.hosts[0].name
    for i, host in enumerate(spec.hosts):
        if host.name == queen_host:
            services.append((("queen", "port"), host.address, spec.queen.port, "the queen"))
        services.append((("hosts", i, "hive", "port"), host.address, host.hive.port, f"the hive of {host.name}"))
    for path, address, port, what in services:
        key = (address, port)
        if key in taken:
            yield SpecIssue(
                path,
                f"{address}:{port} is already used by {taken[key]}",
                port,
                "give each service on a machine its own port",
            )
        else:
            taken[key] = what


def _placements(spec: ClusterSpec, raw: RawNames) -> Iterator[SpecIssue]:
    model_ids = [m.id for m in spec.models]
    host_names = [h.name for h in spec.hosts]
    labels = sorted({label for h in spec.hosts for label in h.labels})
    for i, placement in enumerate(spec.placements):
        if placement.model not in model_ids and placement.model not in raw.models:
            yield SpecIssue(
                ("placements", i, "model"),
                "unknown model",
                placement.model,
                did_you_mean(placement.model, model_ids) or "add it under models first",
            )
        for j, name in enumerate(placement.hosts):
            if name not in host_names and name not in raw.hosts:
                yield SpecIssue(("placements", i, "hosts", j), "unknown host", name, did_you_mean(name, host_names))
        for j, label in enumerate(placement.labels):
            if label not in labels:
                hint = did_you_mean(label, labels) if labels else "add it to a host's labels"
                yield SpecIssue(("placements", i, "labels", j), "no host carries this label", label, hint)
        selects_known = (
            (not placement.hosts and not placement.labels)
            or any(n in host_names for n in placement.hosts)
            or any(label in labels for label in placement.labels)
        )
        eligible = eligible_hosts(spec, placement)
        if raw.hosts_complete and selects_known and placement.replicas > len(eligible):
            unfit = [h.name for h in spec.hosts if not device_fits(placement.device, h)]
            why = f" (device {placement.device} excludes {', '.join(unfit)})" if unfit else ""
            yield SpecIssue(
                ("placements", i, "replicas"),
                f"more replicas than eligible hosts: {len(eligible)} host(s) can run it{why}",
                placement.replicas,
                f"lower replicas to {len(eligible)} or select more hosts (one replica per host)",
            )


def _key_paths(spec: ClusterSpec, base_dir: Path) -> Iterator[SpecIssue]:
    for i, host in enumerate(spec.hosts):
        key = host.ssh.key
        if key and not key.startswith(("/", "~")) and not (base_dir / key).exists():
            yield SpecIssue(
                ("hosts", i, "ssh", "key"),
                f"key file not found at {base_dir / key}",
                key,
                "relative key paths are read from the spec's folder; fix the path or make it absolute",
            )


def _builders(spec: ClusterSpec, raw: RawNames) -> Iterator[SpecIssue]:
    names = [h.name for h in spec.hosts]
    for i, name in enumerate(spec.deploy.builders):
        if name not in names and name not in raw.hosts:
            yield SpecIssue(("deploy", "builders", i), "unknown host", name, did_you_mean(name, names))


def check_spec(spec: ClusterSpec, base_dir: Path, raw: RawNames | None = None) -> list[SpecIssue]:
    """Every cross-field problem of a (possibly salvaged) structurally valid spec."""
    raw = raw or RawNames()
    return [
        *_unique_names(spec),
        *_reserved_names(spec),
        *_queen_host(spec, raw),
        *_ports(spec),
        *_placements(spec, raw),
        *_key_paths(spec, base_dir),
        *_builders(spec, raw),
    ]
