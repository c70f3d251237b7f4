"""Work done once per deploy on the control machine (the one running pyinfra), shared by all hosts.

Deploy files run once per host; these memos make sure each model is fetched, each engine
feature set built and the wheelhouse prepared once, whatever the number of hosts.

The slow work (a model fetch, an engine build) happens only when the run may do it (``slow_work_allowed``): with
``-y`` while the operations are made (pyinfra then asks nothing), else only once they execute, after pyinfra's
"Detected changes" confirmation; never in a dry run. Until then the plan uses what the caches hold (a model's
pinned ``sha256`` from the spec stands for its checksum) and says what is still to fetch or build
(``pending_work``); ``plan_again`` makes the host's plan once more when that work is done.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from pyinfra.context import host, state
from rich.console import Console

from rbee.deploy.cluster_ca import tls_for
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.engine_plan import builds_here
from rbee.deploy.host_diff import Changes, RunInputs, diff, wanted_state
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.host_state import HostState
from rbee.deploy.layout import HostLayout
from rbee.deploy.probe import HostFacts
from rbee.deploy.release_id import rbee_version
from rbee.deploy.release_record import release_record_text
from rbee.deploy.wheelhouse import (
    Wheelhouse,
    build_wheelhouse,
    planned_fingerprint,
    wheelhouse_ready,
    wheelhouse_target,
)
from rbee.deploy.wheelhouse import wheelhouse_archive as build_archive
from rbee.deploys.builder import PyinfraRemote, choose_builder
from rbee.deploys.provenance import release_provenance
from rbee.engine.build_kit import BuildKitError, build_kit
from rbee.engine.features import FeatureSet, local_feature_set
from rbee.engine.remote_build import build_on_host
from rbee.engine.wheel_tags import wheel_problem
from rbee.engine.wheelcache import EngineBuildError, build_wheel, cached_wheel
from rbee.models import FetchedModel, cached_model, fetch_model
from rbee.models.progress import progress_bar, rich_progress_callback
from rbee.spec import load_spec
from rbee.spec.keys import api_keys_text
from rbee.spec.models import ClusterSpec, ModelSpec
from rbee.spec.placement import models_on


@dataclass(frozen=True)
class EngineWheel:
    """A feature set's wheel for this run: ``wheel`` (``None`` while not built yet, or after a failed build),
    ``failure`` (why there is none), ``source`` (cache, this control machine, or the builder host)."""

    wheel: Path | None
    failure: str | None
    source: str


DRY_RUN = "--dry" in sys.argv  # pyinfra does not expose --dry to deploy code

_specs: dict[str, ClusterSpec] = {}
_plans: dict[str, HostPlan] = {}
_facts: dict[str, HostFacts] = {}
_models: dict[str, FetchedModel | None] = {}
_wheels: dict[str, EngineWheel] = {}
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def once(key: str) -> threading.Lock:
    """The lock of one piece of control-side work: pyinfra loads the deploy file for all hosts at once (gevent
    greenlets; its CLI patches ``threading``), so the first host of a feature set builds and the others wait."""
    with _locks_lock:
        return _locks.setdefault(key, threading.Lock())


_wheelhouses: dict[str, Wheelhouse] = {}
_fingerprints: dict[str, str] = {}
_ready: dict[str, bool] = {}
_file_sums: dict[str, str] = {}
_states: dict[str, HostState] = {}
_inputs: dict[str, RunInputs] = {}
_changes: dict[str, Changes] = {}

STARTS_SERVICES = ("restart", "start", "daemon")
"""The kinds of change after which a service runs a new process (``rbee.deploy.host_diff``)."""


def slow_work_allowed() -> bool:
    """Whether the run may fetch models and build engines now.

    With ``-y`` pyinfra checks no changes and asks nothing: at once. Without it (a run that shows its changes and
    asks, ``--json`` that only prints them): only while the operations execute, which is after the confirmation.
    Never in a dry run.
    """
    return not DRY_RUN and (not state.check_for_changes or state.is_executing)


def spec() -> ClusterSpec:
    """The spec of this run (the inventory adapter validated it; read once per run)."""
    path = str(host.data.rbee_spec_file)
    if path not in _specs:
        _specs[path] = load_spec(path)
    return _specs[path]


def host_plan(facts: HostFacts, keys_readable: bool = True) -> HostPlan:
    """The current host's plan (``rbee.deploy.host_plan``), made once per host and run.

    The queen's API keys are read here, on the control machine; a key source without keys raises
    ``ApiKeysError`` (the preflight then plans without keys, ``keys_readable=False``, and fails the host).
    """
    name = str(host.data.rbee_host)
    _facts[name] = facts
    if name not in _plans:
        cluster = spec()
        base_dir = Path(host.data.rbee_spec_file).parent
        wants_keys = keys_readable and name == cluster.queen_host.name
        keys = api_keys_text(cluster, base_dir) if wants_keys else None
        placed = [cluster.model(m) for m in models_on(cluster, name)]
        sizes = {m.id: size for m in placed if (size := model_size(m, cluster)) is not None}
        secret = cluster_secret(cluster.cluster)
        _plans[name] = plan_deployed_host(cluster, name, facts, sizes, keys, secret, tls_for(cluster, name))
    return _plans[name]


def plan_again() -> HostPlan:
    """The current host's plan made again, from the preflight's facts, once the slow work is allowed: with the sizes
    of the models fetched now, and this run's inputs and changes computed again from it."""
    name = str(host.data.rbee_host)
    _plans.pop(name, None)
    _inputs.pop(host.name, None)
    _changes.pop(host.name, None)
    return host_plan(_facts[name])


def model_file(model: ModelSpec, cluster: ClusterSpec) -> FetchedModel | None:
    """The verified local copy of a model: from the cache, else fetched now when the run may (``slow_work_allowed``;
    once for all hosts), else ``None``."""
    with once(f"model:{model.id}"):
        if model.id not in _models or (_models[model.id] is None and slow_work_allowed()):
            cache = Path(cluster.deploy.model_cache).expanduser()
            found = cached_model(model, cache)
            if found is None and slow_work_allowed():
                with progress_bar(Console(stderr=True)) as bar:
                    found = fetch_model(model, cache, progress=rich_progress_callback(bar))
            _models[model.id] = found
        return _models[model.id]


def hosted_model_size(model: ModelSpec, cluster: ClusterSpec) -> int | None:
    """The size of the current host's copy of ``model`` when the spec pins its sha256 and the host's file is the
    verified upload of exactly that content (None otherwise): such a host needs nothing fetched for it."""
    if model.sha256 is None:
        return None
    state = host_state()
    path = HostLayout(cluster.deploy.prefix).model_path(model.id)
    meta, stamp = state.big.get(path), state.uploads.get(path)
    return meta.size if meta and stamp and stamp.sha256 == model.sha256 and stamp.matches(meta) else None


def model_size(model: ModelSpec, cluster: ClusterSpec) -> int | None:
    """A placed model's size for the host's plan (RAM and disk): the cached copy's, else the host's own verified copy
    of the pinned content, else fetched now when the run may (``model_file``); None: not known yet."""
    cached = cached_model(model, Path(cluster.deploy.model_cache).expanduser())
    if cached is not None:
        return cached.size_bytes
    hosted = hosted_model_size(model, cluster)
    if hosted is not None:
        return hosted
    fetched = model_file(model, cluster)
    return fetched.size_bytes if fetched else None


def model_sha256(model: ModelSpec, cluster: ClusterSpec) -> str | None:
    """A model's sha256 for this run: the one the spec pins (what a fetch and each upload verify; fetched only where
    a host lacks it), else the cached copy's, else fetched now when the run may; None: not known yet (a dry run)."""
    if model.sha256 is not None:
        return model.sha256
    fetched = model_file(model, cluster)
    return fetched.sha256 if fetched else None


def say(line: str) -> None:
    """A progress line of the deploy (stderr, at once)."""
    print(f"--> {line}", file=sys.stderr, flush=True)


def engine_wheel(features: FeatureSet) -> EngineWheel:
    """The engine wheel of a feature set: cached, or built now when the run may (``slow_work_allowed``), once per run.

    The control machine builds what it can (``builds_here``); any other feature set is built on a host
    of that set (``rbee.deploys.builder.choose_builder``). A failed build is remembered for the run, so the
    other hosts of that set fail naming it instead of building again.
    """
    with once(f"engine:{features.key}"):
        known = _wheels.get(features.key)
        if known is None or (known.wheel is None and known.failure is None and slow_work_allowed()):
            _wheels[features.key] = _find_or_build(features)
        return _wheels[features.key]


def _find_or_build(features: FeatureSet) -> EngineWheel:
    cluster = spec()
    cache = Path(cluster.deploy.build_cache).expanduser()
    wheel = cached_wheel(features, cache)
    if wheel is not None or not slow_work_allowed():
        return EngineWheel(wheel, None, "cache" if wheel else "not built yet")
    local = builds_here(features, local_feature_set("cpu", features.version))
    builder = host if local else choose_builder(cluster, features, host)
    where = "this control machine" if local else builder.name
    say(f"building engine {features.key} on {where} (once per feature set; minutes)")
    try:
        if local:
            wheel = build_wheel(features, cache)
        else:
            kit = build_kit(features)
            work = f"{cluster.deploy.prefix}/build"
            wheel = build_on_host(PyinfraRemote(builder), features, kit, work, cache, progress=say)
    except (EngineBuildError, BuildKitError, OSError) as exc:
        return EngineWheel(None, f"engine build on {where} failed: {exc}", where)
    say(f"engine {features.key} built on {where}: {wheel.name}")
    return EngineWheel(wheel, None, where)


def wheelhouse_fingerprint(features: FeatureSet) -> str:
    """The identity of a feature set's wheelhouse (``planned_fingerprint``: nothing prepared), once per run."""
    target = wheelhouse_target(features)
    with once(f"fingerprint:{target.name}"):
        if target.name not in _fingerprints:
            _fingerprints[target.name] = planned_fingerprint(target)
        return _fingerprints[target.name]


def wheelhouse_at_hand(features: FeatureSet) -> bool:
    """True when this run may use the feature set's wheelhouse now: prepared already, or the run may prepare it
    (``slow_work_allowed``; a run that asks first downloads and builds nothing before the answer)."""
    target = wheelhouse_target(features)
    if target.name in _wheelhouses or slow_work_allowed():
        return True
    if target.name not in _ready:  # hashes rbee's code: once per target and run, not once per host
        _ready[target.name] = wheelhouse_ready(target)
    return _ready[target.name]


def rbee_wheel_name(features: FeatureSet) -> str:
    """The name of the rbee wheel in the feature set's wheelhouse (a placeholder while it is not prepared yet)."""
    if wheelhouse_at_hand(features):
        return wheelhouse(features).rbee_wheel.name
    return f"rbee-{rbee_version()}-py3-none-any.whl"


def wheelhouse_archive(features: FeatureSet) -> Path:
    """The feature set's wheelhouse as one tar (``rbee.deploy.wheelhouse.wheelhouse_archive``, named by its content's
    fingerprint), made once per run."""
    house = wheelhouse(features)
    with once(f"archive:{house.folder}"):
        return build_archive(house, house.fingerprint)


def file_sha256(path: Path) -> str:
    """The sha256 of a local file (an engine wheel), read once per run."""
    with once(f"sha256:{path}"):
        if str(path) not in _file_sums:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _file_sums[str(path)] = digest.hexdigest()
        return _file_sums[str(path)]


def spec_sha256() -> str:
    """The sha256 of the spec file this run deploys (the one the inventory read), read once per run."""
    path = str(host.data.rbee_spec_file)
    if path not in _file_sums:
        _file_sums[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _file_sums[path]


def remember_state(state: HostState) -> None:
    """Keep what the preflight read on the current host (``rbee.deploy.host_state``)."""
    _states[host.name] = state


def host_state() -> HostState:
    """What the preflight read on the current host (an empty state, as a bare host, before it ran)."""
    return _states.get(host.name, HostState())


def installed_engine(plan: HostPlan) -> tuple[str, str] | None:
    """The engine wheel the current host installed for its feature set, as (path on the host, sha256): the host keeps
    it, whatever this machine's cache holds (a rebuild is not byte-identical, and a runner with an empty cache must
    build nothing a host already has). None: the host needs this run's wheel."""
    return host_state().installed_engine(plan.layout.engines, plan.features.key)


def engine_usable(plan: HostPlan) -> EngineWheel | None:
    """This host's engine wheel when it has one that fits it (or one not built yet), else None."""
    found = engine_wheel(plan.features)
    if found.failure or (found.wheel is not None and wheel_problem(found.wheel.name, host.name, plan.features)):
        return None
    return found


def remote_engine_wheel(plan: HostPlan, found: EngineWheel) -> str:
    """Where the engine wheel goes on the host (a placeholder name while it is not built yet)."""
    name = found.wheel.name if found.wheel else f"llama_cpp_python-{plan.features.version}.whl"
    return f"{plan.layout.engines}/{plan.features.key}/{name}"


def host_engine_path(plan: HostPlan) -> str | None:
    """The engine wheel the current host installs from: the one it has (``installed_engine``), else where this
    run's goes; None when this host has no usable engine (the engine step fails it)."""
    if (kept := installed_engine(plan)) is not None:
        return kept[0]
    found = engine_usable(plan)
    return remote_engine_wheel(plan, found) if found is not None else None


def run_inputs(plan: HostPlan) -> RunInputs:
    """This run's inputs for the current host: fingerprints, checksums, the release record (each hashed once)."""
    if host.name in _inputs:
        return _inputs[host.name]
    fingerprint = wheelhouse_fingerprint(plan.features)
    wheel: tuple[str, str | None] | None = installed_engine(plan)
    engine_key = plan.features.key if wheel is not None else None
    if wheel is None and (found := engine_usable(plan)) is not None:
        engine_key = plan.features.key
        wheel = (remote_engine_wheel(plan, found), file_sha256(found.wheel) if found.wheel else None)
    checksums = model_checksums(plan)
    service_models = {m: sha or spec().model(m).source for m, sha in checksums.items()}  # not fetched yet: its source
    provenance = release_provenance(wheel[1] if wheel else None)  # release id, rbee version, engine wheel
    record = release_record_text(plan.cluster, plan.host, spec_sha256(), engine_key or "", fingerprint, checksums,
                                 provenance=provenance)  # fmt: skip
    _inputs[host.name] = RunInputs(fingerprint, engine_key, wheel, checksums, f"{fingerprint}:{engine_key}",
                                   service_models, record)  # fmt: skip
    return _inputs[host.name]


def changes(plan: HostPlan) -> Changes:
    """What the current host needs: the plan and this run's inputs against what the preflight read."""
    if host.name not in _changes:
        _changes[host.name] = diff(wanted_state(plan, run_inputs(plan)), host_state())
    return _changes[host.name]


def services_started() -> list[str]:
    """The hosts where this run (re)starts a service (read by the health gate, once every host is planned)."""
    return sorted(name for name, found in _changes.items() if any(found.has(kind) for kind in STARTS_SERVICES))


def wheelhouse(features: FeatureSet) -> Wheelhouse:
    """rbee and its dependencies as wheels for the hosts of an engine feature set (cheap when nothing changed)."""
    target = wheelhouse_target(features)
    with once(f"wheelhouse:{target.name}"):
        if target.name not in _wheelhouses:
            _wheelhouses[target.name] = build_wheelhouse(target)
        return _wheelhouses[target.name]


def model_checksums(plan: HostPlan) -> dict[str, str | None]:
    """Each model of a host → its sha256 (not fetched yet: the spec's pinned ``sha256``, else ``None``)."""
    cluster = spec()
    out: dict[str, str | None] = {}
    for model_id in plan.models:
        out[model_id] = model_sha256(cluster.model(model_id), cluster)
    return out


def pending_work(plan: HostPlan) -> list[str]:
    """What this host's deploy needs from the control machine that the run may not do yet (``slow_work_allowed``):
    the models to fetch and the engine to build; empty when the caches hold them."""
    cluster = spec()
    work = [f"fetch model {m} ({cluster.model(m).source})" for m in plan.models
            if model_file(cluster.model(m), cluster) is None and hosted_model_size(cluster.model(m), cluster) is None]
    planned = changes(plan)
    if (planned.has("wheelhouse") or planned.has("install", "runtime")) and not wheelhouse_at_hand(plan.features):
        work.append(f"prepare the wheelhouse {wheelhouse_target(plan.features).name} (rbee and its dependencies)")
    if installed_engine(plan) is not None:
        return work
    found = engine_wheel(plan.features)
    if found.wheel is None and found.failure is None:
        local = builds_here(plan.features, local_feature_set("cpu", plan.features.version))
        work.append(f"build engine {plan.features.key} ({'here' if local else 'on a host of that feature set'})")
    return work
