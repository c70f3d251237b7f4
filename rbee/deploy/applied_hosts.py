"""The hosts a deploy applied, recorded on the queen's host (``<prefix>/applied-hosts.json``), to prune the ones that
left the spec.

A host removed from ``cluster.yaml`` leaves no trace in it: not its address, not how to reach it. Deploys run from
fresh checkouts (CI), so the control machine keeps nothing either. ``rbee deploy`` therefore records, at its end,
every host it applied with its connection settings (as in the spec: address, SSH user, port, key path, known_hosts
file; no secret) and what runs there, on the queen's host; the next ``rbee plan`` / ``rbee deploy`` reads it back
(one read-only command per spec host, ``read_command``) and prunes the recorded hosts the spec no longer has.

The file comes back from a host: it is untrusted. ``parse`` validates every field with the spec's own validators
(host names, addresses, user names, ports, paths, model ids) before any of it reaches pyinfra or SSH, and refuses
anything else (unknown keys, another cluster's record, a file over ``MAX_BYTES``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from rbee.deploy.layout import CONFIG_DIR
from rbee.spec.models import ClusterSpec, HostSpec, SshSpec, StrictModel
from rbee.spec.placement import assign
from rbee.spec.text import Address, HostPath, UnixUser
from rbee.spec.types import ModelId, Name

RECORD_FILE = "applied-hosts.json"
"""The record's name in the queen host's prefix."""

MAX_BYTES = 96 * 1024
"""The largest record read or written (a few hundred hosts; one shell argument holds it when written)."""

MAX_HOSTS = 512

WORKER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}-[0-9]{1,3}$"
WorkerName = Annotated[str, Field(pattern=WORKER_NAME_PATTERN)]
"""A placed worker's instance name, ``<model>-<n>`` (``rbee.deploy.host_plan.placed_workers``)."""

PRUNE_FILE_ENV = "RBEE_PRUNE_FILE"
"""The file of the hosts a deploy prunes (written by ``rbee.rollout.prune``, read by the ``prune_inventory`` entry)."""

HIVE_QUEEN_PREFIX = "hive_queen_url="
RECORD_MARK = "applied-hosts:"


class AppliedHostsError(ValueError):
    """The record cannot be used (the message says why and where it was read)."""


class AppliedHost(StrictModel):
    """One applied host: how to reach it (as the spec said then) and what rbee ran there."""

    name: Name
    address: Address
    ssh: SshSpec = Field(default_factory=SshSpec)
    workers: list[WorkerName] = Field(default_factory=list, max_length=256)
    models: list[ModelId] = Field(default_factory=list, max_length=256)

    def as_spec_host(self) -> HostSpec:
        """The host as a spec would give it (for the SSH check and the inventory)."""
        return HostSpec(name=self.name, address=self.address, ssh=self.ssh)


class AppliedHosts(StrictModel):
    """``applied-hosts.json``: the cluster, its queen's host, the layout every host got, and the hosts."""

    version: Literal[1] = 1
    cluster: Name
    queen: Name
    prefix: HostPath
    service_user: UnixUser
    hosts: list[AppliedHost] = Field(max_length=MAX_HOSTS)

    @field_validator("hosts")
    @classmethod
    def _unique(cls, hosts: list[AppliedHost]) -> list[AppliedHost]:
        if twice := sorted(n for n, c in Counter(h.name for h in hosts).items() if c > 1):
            raise ValueError(f"hosts named more than once: {', '.join(twice)}")
        return hosts

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def get(self, name: str) -> AppliedHost | None:
        return next((h for h in self.hosts if h.name == name), None)

    def text(self) -> str:
        """The file's text: sorted keys, one line (the same record, the same bytes)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")) + "\n"


def applied_host(spec: ClusterSpec, host: HostSpec) -> AppliedHost:
    """What a deploy of ``spec`` applies to ``host``: its connection settings, its placed workers and models."""
    seen: Counter[str] = Counter()
    workers = []
    for placed in assign(spec):
        if placed.host == host.name:
            seen[placed.model_id] += 1
            workers.append(f"{placed.model_id}-{seen[placed.model_id]}")
    models = sorted(seen)
    return AppliedHost(name=host.name, address=host.address, ssh=host.ssh, workers=workers, models=models)


def record_of(spec: ClusterSpec, previous: AppliedHosts | None = None, keep: tuple[str, ...] = ()) -> AppliedHosts:
    """The record after deploying ``spec``: its hosts, then the hosts of ``previous`` named in ``keep`` that the spec
    no longer has (not pruned yet: unreachable, failed, or ``--no-prune``), as they were recorded."""
    hosts = [applied_host(spec, h) for h in spec.hosts]
    if previous is not None:
        mine = {h.name for h in spec.hosts}
        hosts += [h for h in previous.hosts if h.name in keep and h.name not in mine]
    return AppliedHosts(cluster=spec.cluster, queen=spec.queen_host.name, prefix=spec.deploy.prefix,
                        service_user=spec.deploy.service_user, hosts=hosts)  # fmt: skip


def removed_hosts(record: AppliedHosts, spec: ClusterSpec) -> list[AppliedHost]:
    """The recorded hosts the spec no longer has, in recorded order."""
    mine = {h.name for h in spec.hosts}
    return [h for h in record.hosts if h.name not in mine]


def removes(record: AppliedHosts, host: AppliedHost) -> list[str]:
    """What pruning ``host`` stops and deletes, as ``rbee plan`` lists it."""
    units = ["rbee-queen.service"] if host.name == record.queen else []
    units += ["rbee-hive.service", *(f"rbee-worker@{w}.service" for w in host.workers)]
    return [*units, *(f"model {m}" for m in host.models), CONFIG_DIR, record.prefix]


def parse(text: str, where: str, cluster: str) -> AppliedHosts:
    """The record read on host ``where``, validated; ``AppliedHostsError`` naming every problem."""
    if len(text.encode()) > MAX_BYTES:
        raise AppliedHostsError(f"{where}: {RECORD_FILE} is over {MAX_BYTES} bytes; not read")
    try:
        record = AppliedHosts.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise AppliedHostsError(f"{where}: {RECORD_FILE} is not a record rbee wrote ({problems[:600]})") from None
    if record.cluster != cluster:
        raise AppliedHostsError(f"{where}: {RECORD_FILE} records cluster {record.cluster!r}, not {cluster!r}")
    return record


def record_path(prefix: str) -> str:
    return f"{prefix}/{RECORD_FILE}"


def read_command(prefix: str) -> str:
    """Shell (read-only): the queen URL this host's hive reports to, then the record when the host holds one."""
    path = shlex.quote(record_path(prefix))
    return (
        f"printf '{HIVE_QUEEN_PREFIX}%s\\n' \"$(sed -n 's/^queen_url: *//p' {CONFIG_DIR}/hive.yaml 2>/dev/null "
        f"| head -n 1)\"; if [ -f {path} ]; then echo '{RECORD_MARK}'; head -c {MAX_BYTES + 1} {path}; fi"
    )


@dataclass(frozen=True)
class HostRead:
    """What ``read_command`` found on a host: its hive's queen URL ("" when none) and the record's text (None)."""

    hive_queen_url: str
    record: str | None


def parse_read(output: str) -> HostRead:
    head, mark, rest = output.partition(f"{RECORD_MARK}\n")
    url = next((line[len(HIVE_QUEEN_PREFIX) :] for line in head.splitlines() if line.startswith(HIVE_QUEEN_PREFIX)), "")
    return HostRead(url.strip().strip("\"'"), rest if mark else None)


def write_command(prefix: str, record: AppliedHosts) -> str:
    """Shell: write the record atomically (temp file beside it, fsync, rename; root's, 0644: it holds no secret)."""
    text = record.text()
    if len(text.encode()) > MAX_BYTES:
        raise AppliedHostsError(f"the record of {len(record.hosts)} hosts is over {MAX_BYTES} bytes")
    program = (
        "import os, sys\n"
        "path, text = sys.argv[1], sys.argv[2]\n"
        "temp = os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + '.rbee-tmp-' + str(os.getpid()))\n"
        "fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
        "os.write(fd, text.encode()); os.fsync(fd); os.close(fd)\n"
        "os.chmod(temp, 0o644); os.replace(temp, path)\n"
        "d = os.open(os.path.dirname(path), os.O_RDONLY); os.fsync(d); os.close(d)\n"
    )
    return f"python3 -c {shlex.quote(program)} {shlex.quote(record_path(prefix))} {shlex.quote(text)}"


_URL_HOST = re.compile(r"^[a-z]+://(\[[^\]]*\]|[^/:]*)")


def url_host(url: str) -> str:
    """The host part of ``scheme://host:port`` (brackets of an IPv6 address dropped; "" when not a URL)."""
    match = _URL_HOST.match(url.strip())
    return match.group(1).strip("[]").lower() if match else ""
