"""The engine and wheelhouse of a deploy run on the control machine: each feature set's engine wheel (cached, or built
once for all hosts when the run may, here or on a host of that set), the wheel a host keeps, and rbee's wheelhouse
(its identity known without preparing it; prepared once per feature set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyinfra.context import host

from rbee.deploy.engine_plan import builds_here
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.release_id import rbee_version
from rbee.deploy.wheelhouse import (
    Wheelhouse,
    build_wheelhouse,
    planned_fingerprint,
    wheelhouse_ready,
    wheelhouse_target,
)
from rbee.deploy.wheelhouse import wheelhouse_archive as build_archive
from rbee.deploys.builder import PyinfraRemote, choose_builder
from rbee.deploys.control_run import host_state, memo, once, say, slow_work_allowed, spec
from rbee.engine.build_kit import BuildKitError, build_kit
from rbee.engine.features import FeatureSet, local_feature_set
from rbee.engine.remote_build import build_on_host
from rbee.engine.wheel_tags import wheel_problem
from rbee.engine.wheelcache import EngineBuildError, build_wheel, cached_wheel


@dataclass(frozen=True)
class EngineWheel:
    """A feature set's wheel for this run: ``wheel`` (``None`` while not built yet, or after a failed build),
    ``failure`` (why there is none), ``source`` (cache, this control machine, or the builder host)."""

    wheel: Path | None
    failure: str | None
    source: str


_wheels: dict[str, EngineWheel] = {}
_wheelhouses: dict[str, Wheelhouse] = {}
_fingerprints: dict[str, str] = {}
_ready: dict[str, bool] = {}


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


def wheelhouse_fingerprint(features: FeatureSet) -> str:
    """The identity of a feature set's wheelhouse (``planned_fingerprint``: nothing prepared), once per run."""
    target = wheelhouse_target(features)
    return memo("fingerprint", _fingerprints, target.name, lambda: planned_fingerprint(target))


def wheelhouse_at_hand(features: FeatureSet) -> bool:
    """True when this run may use the feature set's wheelhouse now: prepared already, or the run may prepare it
    (``slow_work_allowed``; a run that asks first downloads and builds nothing before the answer)."""
    target = wheelhouse_target(features)
    if target.name in _wheelhouses or slow_work_allowed():
        return True
    if target.name not in _ready:  # hashes rbee's code: once per target and run, not once per host
        _ready[target.name] = wheelhouse_ready(target)
    return _ready[target.name]


def wheelhouse(features: FeatureSet) -> Wheelhouse:
    """rbee and its dependencies as wheels for the hosts of an engine feature set (cheap when nothing changed)."""
    target = wheelhouse_target(features)
    return memo("wheelhouse", _wheelhouses, target.name, lambda: build_wheelhouse(target))


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
