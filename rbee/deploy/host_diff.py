"""What a host must get: the wanted state of a deploy (``Wanted``) against the state read from the host.

``wanted_state(plan, inputs)`` turns a ``HostPlan`` and this run's inputs (wheelhouse fingerprint, engine
wheel, model checksums, the release record) into ``Wanted``; ``diff(wanted, state)`` lists the ``Change``s
that bring the host there. The pyinfra deploy (``rbee/deploys/``) turns each change into an operation, so a host
already there gets no command after the preflight; ``rbee plan`` shows the same changes (a dry run).
Large files are compared by their upload stamp and ``stat``, never by reading them on the host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from rbee.deploy.host_plan import HostPlan
from rbee.deploy.host_state import WHEELHOUSE_STAMP, HostState, Meta, UnitState, resumable_temp
from rbee.deploy.launchd import stale_workers
from rbee.deploy.layout import (
    CONFIG_DIR,
    CREDENTIALS_DIR,
    DATA_DIR,
    MACOS_DATA_DIR,
    MACOS_LOG_DIR,
    OLD_API_KEYS_FILE,
    WORKERS_DIR,
)
from rbee.deploy.release_record import RECORD


@dataclass(frozen=True)
class WantedDir:
    """A folder: mode, and owner/group when they matter (None: any)."""

    path: str
    mode: str
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class WantedFile:
    """A small file the deploy writes (a config, a unit, a credential, the release record)."""

    label: str
    path: str
    text: str
    mode: str
    user: str | None
    group: str | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class WantedUpload:
    """A large file (a model, the engine wheel): its checksum (None: not known yet, a dry run) and mode."""

    label: str
    path: str
    sha256: str | None
    mode: str = "644"


@dataclass(frozen=True)
class RunInputs:
    """This run's inputs for one host, computed once per run on the control machine.

    ``engine_wheel``: remote path and sha256 of the engine wheel (sha None: not built yet, a dry run);
    ``models``: model id → sha256 (None: not fetched, a dry run); ``release``: the runtime and engine
    identity services are stamped with; ``service_models``: model id → what its services' digests hold
    (the checksum, or the source in a dry run); ``record``: the text of ``release.json``.
    """

    wheelhouse: str
    engine_key: str | None
    engine_wheel: tuple[str, str | None] | None
    models: Mapping[str, str | None]
    release: str
    service_models: Mapping[str, str]
    record: str


@dataclass(frozen=True)
class Wanted:
    """Everything a host should hold after a deploy (built by ``wanted_state``)."""

    service_user: str
    launchd: bool
    dirs: tuple[WantedDir, ...]
    files: tuple[WantedFile, ...]
    uploads: tuple[WantedUpload, ...]
    wheelhouse: str
    installs: Mapping[str, str]
    services: Mapping[str, str]
    units: tuple[str, ...]
    workers: tuple[str, ...]
    models_dir: str = ""
    """Where the models live: a model file there that no upload wants is no longer placed (removed)."""


@dataclass(frozen=True)
class Change:
    """One thing that differs: ``kind`` (what to do), ``target`` (a path, unit, stamp, worker), ``why``."""

    kind: str
    target: str
    why: str = ""
    resume_from: int = 0
    """For an upload: the bytes an interrupted copy of the same content left on the host (continued from there)."""


@dataclass
class Changes:
    """The changes of one host, looked up by kind and target."""

    items: list[Change] = field(default_factory=list)

    def get(self, kind: str, target: str) -> Change | None:
        return next((c for c in self.items if c.kind == kind and c.target == target), None)

    def has(self, kind: str, target: str = "") -> bool:
        return any(c.kind == kind and (not target or c.target == target) for c in self.items)

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.items if c.kind == kind]

    def __bool__(self) -> bool:
        return bool(self.items)


def _dirs(plan: HostPlan) -> tuple[WantedDir, ...]:
    layout, user = plan.layout, plan.service_user
    dirs = [WantedDir(layout.prefix, "755"), WantedDir(layout.models, "755"), WantedDir(layout.engines, "755"),
            WantedDir(layout.stamps, "700", "root", "root")]  # fmt: skip
    if plan.service_manager == "launchd":
        dirs += [WantedDir(CONFIG_DIR, "750", "root", user), WantedDir(MACOS_DATA_DIR, "750", user, user),
                 WantedDir(MACOS_LOG_DIR, "750", user, user),
                 WantedDir(f"{MACOS_DATA_DIR}/credentials", "700", user, user)]  # fmt: skip
    else:
        dirs += [WantedDir(CONFIG_DIR, "750", "root", user), WantedDir(WORKERS_DIR, "750", "root", user),
                 WantedDir(CREDENTIALS_DIR, "700", "root", "root"), WantedDir(DATA_DIR, "750", user, user)]  # fmt: skip
    return tuple(dirs)


def wanted_state(plan: HostPlan, inputs: RunInputs) -> Wanted:
    """What ``plan`` and this run's ``inputs`` put on the host."""
    files = [
        WantedFile(f.label, f.path, f.text, f.mode, "root" if f.group else f.owner, f.group or plan.service_user)
        for f in plan.files
    ]
    files.append(WantedFile("record: release.json", f"{plan.layout.prefix}/{RECORD}", inputs.record, "644", None, None))
    uploads = [WantedUpload(f"models: {m}", plan.layout.model_path(m), sha) for m, sha in inputs.models.items()]
    installs = {"runtime": inputs.wheelhouse}
    if inputs.engine_wheel is not None and inputs.engine_key is not None:
        uploads.append(WantedUpload(f"engine: upload {inputs.engine_key}", *inputs.engine_wheel))
        installs["engine"] = inputs.engine_key
    services = {s.unit: s.digest(inputs.release, inputs.service_models) for s in plan.services}
    return Wanted(
        service_user=plan.service_user,
        launchd=plan.service_manager == "launchd",
        dirs=_dirs(plan),
        files=tuple(files),
        uploads=tuple(uploads),
        wheelhouse=inputs.wheelhouse,
        installs=installs,
        services=services,
        units=plan.units,
        workers=tuple(w.name for w in plan.workers),
        models_dir=plan.layout.models,
    )


def _meta_changes(kind: str, path: str, meta: Meta, mode: str, user: str | None, group: str | None) -> list[Change]:
    out = []
    if not meta.same_mode(mode):
        out.append(Change(f"{kind}-mode", path, f"mode {meta.mode}, wanted {mode}"))
    if (user and meta.user != user) or (group and meta.group != group):
        out.append(Change(f"{kind}-owner", path, f"owner {meta.user}:{meta.group}"))
    return out


def _file_changes(wanted: Wanted, state: HostState) -> list[Change]:
    out: list[Change] = []
    for f in wanted.files:
        remote = state.files.get(f.path)
        if remote is None:
            out.append(Change("file", f.path, "missing"))
        elif remote.sha256 != f.sha256:
            out.append(Change("file", f.path, "content differs"))
        else:
            out += _meta_changes("file", f.path, remote.meta, f.mode, f.user, f.group)
    for up in wanted.uploads:
        meta, stamp = state.big.get(up.path), state.uploads.get(up.path)
        if meta is not None and up.sha256 and stamp and stamp.sha256 == up.sha256 and stamp.matches(meta):
            out += _meta_changes("file", up.path, meta, up.mode, None, None)
            continue
        partial = state.leftover_sizes.get(resumable_temp(up.path, up.sha256), 0) if up.sha256 else 0
        why = "missing" if meta is None else "not the verified upload of this content"
        out.append(Change("upload", up.path, why + (f"; {partial} bytes copied before" if partial else ""), partial))
    return out


def _service_changes(wanted: Wanted, state: HostState) -> list[Change]:
    out: list[Change] = []
    if wanted.launchd:
        for unit, digest in wanted.services.items():
            if state.stamps.get(f"service-{unit}") != digest or state.launchd.get(unit, "absent") != "running":
                out.append(Change("daemon", unit, "not running its current inputs"))
        out += [Change("remove-worker", w) for w in stale_workers(state.daemon_files(), wanted.workers)]
        return out
    unit_files = {f"/etc/systemd/system/{u}" for u in wanted.units}
    if any(c.kind == "file" and c.target in unit_files for c in _file_changes(wanted, state)) or any(
        u.need_reload for u in state.units.values()
    ):
        out.append(Change("daemon-reload", "systemd"))
    for unit, digest in wanted.services.items():
        now = state.units.get(unit, UnitState())
        if not now.enabled:
            out.append(Change("enable", unit))
        if state.stamps.get(f"service-{unit}") != digest:
            out.append(Change("restart", unit, "its inputs changed"))
        elif not now.active:
            out.append(Change("start", unit, "not running"))
    if OLD_API_KEYS_FILE in state.files:
        out.append(Change("remove-file", OLD_API_KEYS_FILE, "an older release's API keys file"))
    out += [Change("remove-worker", w) for w in state.worker_instances() if w not in wanted.workers]
    return out


def diff(wanted: Wanted, state: HostState) -> Changes:
    """Every change that brings the host from ``state`` to ``wanted`` (none: it is there)."""
    out: list[Change] = []
    files = _file_changes(wanted, state)
    pending = {c.target for c in files if c.kind == "upload"}
    resumed = {resumable_temp(u.path, u.sha256) for u in wanted.uploads if u.sha256 and u.path in pending}
    if stale := [p for p in state.leftovers if p not in resumed]:  # an interrupted copy still wanted is continued
        out.append(Change("leftovers", "\n".join(stale), "temp files of an interrupted upload"))
    if not {"user", "group"} <= state.account:
        out.append(Change("account", wanted.service_user, "the service account is missing"))
    for d in wanted.dirs:
        meta = state.dirs.get(d.path)
        if meta is None:
            out.append(Change("dir", d.path, "missing"))
        elif _meta_changes("dir", d.path, meta, d.mode, d.user, d.group):
            out.append(Change("dir", d.path, "mode or owner differs"))
    stamp = state.stamps.get(WHEELHOUSE_STAMP, "").split()
    if stamp != [wanted.wheelhouse, state.wheelhouse_listing]:
        out.append(Change("wheelhouse", wanted.wheelhouse, "not the synced wheelhouse of this release"))
    for name, want in wanted.installs.items():
        if state.stamps.get(name) != want:
            out.append(Change("install", name, f"stamp {state.stamps.get(name, '(none)')}"))
    out += files
    out += _service_changes(wanted, state)
    out += _stale_models(wanted, state)
    return Changes(out)


def _stale_models(wanted: Wanted, state: HostState) -> list[Change]:
    """Model files of the models folder that no placement of this host needs any more (removed by the deploy)."""
    if not wanted.models_dir:
        return []
    folder = f"{wanted.models_dir}/"
    kept = {u.path for u in wanted.uploads}
    stale = [p for p in state.big if p.startswith(folder) and "/" not in p[len(folder) :] and p not in kept]
    return [Change("remove-model", p, "no longer placed on this host") for p in sorted(stale)]
