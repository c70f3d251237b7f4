"""Work done once per deploy on the control machine (the one running pyinfra), shared by all hosts.

Deploy files run once per host; these memos make sure each model is fetched, each engine
feature set built and the wheelhouse prepared once, whatever the number of hosts.
In ``--dry`` runs nothing is fetched or built: the plan says it would be.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyinfra.context import host
from rich.console import Console

from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.probe import HostFacts
from rbee.deploy.wheelhouse import Wheelhouse, build_wheelhouse, wheelhouse_target
from rbee.engine.features import FeatureSet
from rbee.engine.wheelcache import build_wheel, cached_wheel
from rbee.models import FetchedModel, cached_model, fetch_model
from rbee.models.progress import progress_bar, rich_progress_callback
from rbee.spec import load_spec
from rbee.spec.keys import api_keys_text
from rbee.spec.models import ClusterSpec, ModelSpec
from rbee.spec.placement import models_on

DRY_RUN = "--dry" in sys.argv  # pyinfra does not expose --dry to deploy code

_specs: dict[str, ClusterSpec] = {}
_plans: dict[str, HostPlan] = {}
_models: dict[str, FetchedModel | None] = {}
_wheels: dict[str, Path | None] = {}
_wheelhouses: dict[str, Wheelhouse] = {}


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
    if name not in _plans:
        cluster = spec()
        base_dir = Path(host.data.rbee_spec_file).parent
        wants_keys = keys_readable and name == cluster.queen_host.name
        keys = api_keys_text(cluster, base_dir) if wants_keys else None
        placed = [cluster.model(m) for m in models_on(cluster, name)]
        sizes = {m.id: f.size_bytes for m in placed if (f := model_file(m, cluster)) is not None}
        _plans[name] = plan_deployed_host(cluster, name, facts, sizes, keys)
    return _plans[name]


def model_file(model: ModelSpec, cluster: ClusterSpec) -> FetchedModel | None:
    """The verified local copy of a model (fetched now if needed; ``None`` in a dry run without it)."""
    cache_dir = cluster.deploy.model_cache
    if model.id not in _models:
        cache = Path(cache_dir).expanduser()
        found = cached_model(model, cache)
        if found is None and not DRY_RUN:
            with progress_bar(Console(stderr=True)) as bar:
                found = fetch_model(model, cache, progress=rich_progress_callback(bar))
        _models[model.id] = found
    return _models[model.id]


def engine_wheel(features: FeatureSet, cache_dir: str, can_build: bool) -> Path | None:
    """The engine wheel of a feature set: cached, or built now when ``can_build`` (never in a dry run)."""
    if features.key not in _wheels:
        cache = Path(cache_dir).expanduser()
        wheel = cached_wheel(features, cache)
        if wheel is None and can_build and not DRY_RUN:
            print(f"--> building engine {features.key} (once; minutes)", file=sys.stderr, flush=True)
            wheel = build_wheel(features, cache)
        _wheels[features.key] = wheel
    return _wheels[features.key]


def wheelhouse(features: FeatureSet) -> Wheelhouse:
    """rbee and its dependencies as wheels for the hosts of an engine feature set (cheap when nothing changed)."""
    target = wheelhouse_target(features)
    if target.name not in _wheelhouses:
        _wheelhouses[target.name] = build_wheelhouse(target)
    return _wheelhouses[target.name]


def model_checksums(plan: HostPlan) -> dict[str, str | None]:
    """Each model of a host → its sha256 (``None`` in a dry run that has not fetched it)."""
    cluster = spec()
    out: dict[str, str | None] = {}
    for model_id in plan.models:
        fetched = model_file(cluster.model(model_id), cluster)
        out[model_id] = fetched.sha256 if fetched else None
    return out
