"""What a deploy would change on one host, as data for people and machines (``rbee plan``).

``host_changes`` sorts the diff of a host (``rbee.deploy.host_diff``) into kinds a reviewer reads: files and
units (with a unified diff of each changed text file, secrets redacted), models (added or replaced, with
sizes), the engine (installed, or built first), the runtime (the wheelhouse synced, installed), the services
that restart and why, and the setup (account, folders, leftovers). The pyinfra preflight builds it in a dry run
(``rbee.deploys.plan_export``) and ``rbee plan`` renders it (``rbee.rollout.plan_render``). Pure: the host's
current file contents come in as ``HostText``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from rbee.deploy.host_diff import Changes, Wanted
from rbee.deploy.host_plan import UNIT_DIR, HostPlan
from rbee.deploy.host_state import HostState
from rbee.deploy.layout import LAUNCH_DAEMONS_DIR
from rbee.deploy.redact import Redactor
from rbee.deploy.text_diff import text_diff


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileChange(_Model):
    """A config, unit, env file or credential that changes: ``create``, ``update`` (its content), ``mode``,
    ``owner`` or ``remove``; ``diff``: a unified diff of its text, redacted (``""``: none shown, ``note`` says why;
    a ``secret`` file's content is never read nor shown)."""

    path: str
    label: str
    action: Literal["create", "update", "mode", "owner", "remove"]
    why: str = ""
    secret: bool = False
    diff: str = ""
    note: str = ""


class ModelChange(_Model):
    """A model file copied to the host (``add``: none there, ``replace``: another content) or given its mode.

    ``size_bytes``: the file to copy (None: not in the control machine's cache yet: a dry run fetches nothing);
    ``current_bytes``: the file on the host now (None: none).
    """

    model: str
    action: Literal["add", "replace", "mode"]
    why: str = ""
    size_bytes: int | None = None
    current_bytes: int | None = None


class EngineChange(_Model):
    """The engine feature set ``features`` installed (``build and install``: its wheel is not cached yet);
    ``current``: the feature set installed now (``""``: none)."""

    features: str
    action: Literal["install", "build and install"]
    current: str = ""


class RuntimeChange(_Model):
    """rbee's runtime: the wheelhouse ``wheelhouse`` (its fingerprint) synced to the host and/or installed."""

    wheelhouse: str
    action: Literal["sync and install", "sync", "install"]
    current: str = ""


class ServiceChange(_Model):
    """A service that starts anew (``restart``, ``start``), is only enabled, or is stopped and removed
    (``stop``: a worker no longer placed); ``why``: what changed among what it starts from."""

    service: str
    action: Literal["restart", "start", "enable", "stop"]
    enable: bool = False
    why: list[str] = []


class HostChanges(_Model):
    """Everything a deploy would change on one host, by kind (empty lists: nothing of that kind)."""

    files: list[FileChange] = []
    units: list[FileChange] = []
    daemon_reload: bool = False
    models: list[ModelChange] = []
    engine: EngineChange | None = None
    runtime: RuntimeChange | None = None
    services: list[ServiceChange] = []
    setup: list[str] = []

    @property
    def count(self) -> int:
        """How many things change (a restart counts once, the unit reload once)."""
        single = (self.daemon_reload, self.engine is not None, self.runtime is not None)
        return len(self.files) + len(self.units) + len(self.models) + len(self.services) + len(self.setup) + sum(single)

    @property
    def pending(self) -> bool:
        return self.count > 0

    @property
    def restarts(self) -> list[ServiceChange]:
        """The services whose process changes (restarted, started or stopped)."""
        return [s for s in self.services if s.action != "enable"]


@dataclass(frozen=True)
class HostText:
    """The first bytes of a file read on the host (``data``, at most ``MAX_TEXT_BYTES`` of them) and its size."""

    data: bytes
    size: int


def texts_to_read(plan: HostPlan, changes: Changes) -> list[str]:
    """The files whose content differs on the host and can be shown: what ``rbee plan`` reads there (no secret)."""
    secret = {f.path for f in plan.files if f.secret}
    return [c.target for c in changes.of("file") if c.why == "content differs" and c.target not in secret]


def _is_unit(path: str) -> bool:
    return path.startswith((f"{UNIT_DIR}/", f"{LAUNCH_DAEMONS_DIR}/"))


def _file_changes(
    host: str, plan: HostPlan, wanted: Wanted, changes: Changes, current: Mapping[str, HostText], redactor: Redactor
) -> list[FileChange]:
    files = {f.path: f for f in wanted.files}
    secret = {f.path for f in plan.files if f.secret}
    out: list[FileChange] = []
    for change in changes.items:
        wanted_file = files.get(change.target)
        if change.kind == "remove-file":
            out.append(FileChange(path=change.target, label=change.target, action="remove", why=change.why))
        if wanted_file is None or change.kind not in ("file", "file-mode", "file-owner"):
            continue
        label, is_secret = wanted_file.label, change.target in secret
        if change.kind != "file":
            meta: Literal["mode", "owner"] = "mode" if change.kind == "file-mode" else "owner"
            out.append(FileChange(path=change.target, label=label, action=meta, why=change.why, secret=is_secret))
            continue
        diff, note = "", "secret: the content is never shown"
        if not is_secret:
            found = current.get(change.target)
            if change.why == "missing":
                shown = text_diff(f"{host}:{change.target}", None, wanted_file.text, redactor)
                diff, note = shown.diff, shown.note
            elif found is None:
                note = "not compared: the host's copy could not be read"
            else:
                shown = text_diff(f"{host}:{change.target}", found.data, wanted_file.text, redactor,
                                  current_size=found.size)  # fmt: skip
                diff, note = shown.diff, shown.note
        action = "create" if change.why == "missing" else "update"
        out.append(FileChange(path=change.target, label=label, action=action, why=change.why, secret=is_secret,
                              diff=diff, note=note))  # fmt: skip
    return out


def _model_changes(
    plan: HostPlan, changes: Changes, state: HostState, model_bytes: Mapping[str, int | None]
) -> list[ModelChange]:
    out: list[ModelChange] = []
    for model_id in plan.models:
        path = plan.layout.model_path(model_id)
        now = state.big.get(path)
        current = now.size if now is not None else None
        if upload := changes.get("upload", path):
            action: Literal["add", "replace"] = "add" if now is None else "replace"
            out.append(ModelChange(model=model_id, action=action, why=upload.why,
                                   size_bytes=model_bytes.get(model_id), current_bytes=current))  # fmt: skip
        elif mode := changes.get("file-mode", path):
            out.append(ModelChange(model=model_id, action="mode", why=mode.why, current_bytes=current))
    return out


def _engine_change(wanted: Wanted, changes: Changes, state: HostState, cached: bool) -> EngineChange | None:
    key = wanted.installs.get("engine")
    wheel_paths = {u.path for u in wanted.uploads if u.label.startswith("engine:")}
    if key is None or not (changes.has("install", "engine") or any(changes.has("upload", p) for p in wheel_paths)):
        return None
    return EngineChange(features=key, action="install" if cached else "build and install",
                        current=state.stamps.get("engine", ""))  # fmt: skip


def _runtime_change(wanted: Wanted, changes: Changes, state: HostState) -> RuntimeChange | None:
    sync, install = changes.has("wheelhouse"), changes.has("install", "runtime")
    if not (sync or install):
        return None
    action: Literal["sync and install", "sync", "install"] = (
        "sync and install" if sync and install else "sync" if sync else "install"
    )
    return RuntimeChange(wheelhouse=wanted.wheelhouse, action=action, current=state.stamps.get("runtime", ""))


def _restart_reasons(plan: HostPlan, unit: str, found: HostChanges, state: HostState) -> list[str]:
    """Why a service restarts: which of what it starts from changed (``found``: the host's other changes)."""
    service = next(s for s in plan.services if s.unit == unit)
    if f"service-{unit}" not in state.stamps:
        return ["not started by rbee yet"]
    changed = {f.path for f in (*found.files, *found.units) if f.action in ("create", "update")}
    why = [f"{f.label} changed" for f in plan.files if f.path in changed and f.text in service.inputs]
    why += [f"model {m.model} {'added' if m.action == 'add' else 'replaced'}" for m in found.models
            if m.model in service.models and m.action != "mode"]  # fmt: skip
    if found.runtime is not None and found.runtime.action != "sync":
        why.append("runtime reinstalled")
    if found.engine is not None:
        why.append(f"engine {found.engine.features} installed")
    return why or ["its credentials, certificates or release changed"]


def _service_changes(plan: HostPlan, changes: Changes, state: HostState, found: HostChanges) -> list[ServiceChange]:
    out: list[ServiceChange] = []
    for service in plan.services:
        unit, enable = service.unit, changes.has("enable", service.unit)
        if changes.has("restart", unit) or changes.has("daemon", unit):
            why = _restart_reasons(plan, unit, found, state)
            out.append(ServiceChange(service=unit, action="restart", enable=enable, why=why))
        elif start := changes.get("start", unit):
            out.append(ServiceChange(service=unit, action="start", enable=enable, why=[start.why]))
        elif enable:
            out.append(ServiceChange(service=unit, action="enable", enable=True, why=["not enabled at boot"]))
    for stale in changes.of("remove-worker"):
        name = f"rbee-worker@{stale.target}.service" if plan.service_manager == "systemd" else stale.target
        out.append(ServiceChange(service=name, action="stop", why=["no longer placed on this host: removed"]))
    return out


def _setup(changes: Changes, shown: set[tuple[str, str]]) -> list[str]:
    """Every change not ``shown`` in another kind: the account, folders, leftovers, anything else by its name."""
    out: list[str] = []
    for change in changes.items:
        if (change.kind, change.target) in shown:
            continue
        if change.kind == "account":
            out.append(f"service account {change.target}: {change.why}")
        elif change.kind == "dir":
            out.append(f"folder {change.target}: {change.why}")
        elif change.kind == "leftovers":
            out.append(f"remove {len(change.target.splitlines())} temp file(s) of an interrupted upload")
        else:
            out.append(f"{change.kind} {change.target}" + (f": {change.why}" if change.why else ""))
    return out


def _shown(plan: HostPlan, wanted: Wanted, files: list[FileChange], models: list[ModelChange],
           engine: EngineChange | None, services: list[ServiceChange]) -> set[tuple[str, str]]:  # fmt: skip
    """The (kind, target) of every change the files, units, models, engine, runtime and services columns show."""
    shown = {("wheelhouse", wanted.wheelhouse), ("install", "runtime"), ("daemon-reload", "systemd")}
    kinds = {"create": "file", "update": "file", "mode": "file-mode", "owner": "file-owner", "remove": "remove-file"}
    shown |= {(kinds[f.action], f.path) for f in files}
    for model in models:
        path = plan.layout.model_path(model.model)
        shown |= {("upload", path), ("file-mode", path)}
    if engine is not None:
        shown.add(("install", "engine"))
        shown |= {(k, u.path) for u in wanted.uploads if u.label.startswith("engine:") for k in ("upload", "file-mode")}
    for service in services:
        if service.action == "stop":
            shown.add(("remove-worker", service.service.removeprefix("rbee-worker@").removesuffix(".service")))
        shown |= {(k, service.service) for k in ("restart", "daemon", "start", "enable")}
    return shown


def host_changes(
    plan: HostPlan,
    wanted: Wanted,
    changes: Changes,
    state: HostState,
    current: Mapping[str, HostText],
    redactor: Redactor,
    *,
    model_bytes: Mapping[str, int | None] | None = None,
    engine_cached: bool = True,
) -> HostChanges:
    """The changes of ``plan``'s host by kind (see the module docstring).

    ``wanted``/``changes``: the host's wanted state and its diff against ``state`` (what the preflight read);
    ``current``: the host's copy of each file of ``texts_to_read`` (a missing one is named as not compared);
    ``model_bytes``: the size of each model's file on the control machine; ``engine_cached``: the engine wheel
    of the host's feature set is in the control machine's cache (else the deploy builds it first).
    """
    everything = _file_changes(plan.host, plan, wanted, changes, current, redactor)
    found = HostChanges(
        files=[f for f in everything if not _is_unit(f.path)],
        units=[f for f in everything if _is_unit(f.path)],
        daemon_reload=changes.has("daemon-reload"),
        models=_model_changes(plan, changes, state, model_bytes or {}),
        engine=_engine_change(wanted, changes, state, engine_cached),
        runtime=_runtime_change(wanted, changes, state),
    )
    services = _service_changes(plan, changes, state, found)
    setup = _setup(changes, _shown(plan, wanted, everything, found.models, found.engine, services))
    return found.model_copy(update={"services": services, "setup": setup})
