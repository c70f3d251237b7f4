"""Work done once per deploy on the control machine (the one running pyinfra), shared by all hosts.

Deploy files run once per host; these memos make sure each model is fetched, each engine
feature set built and the wheelhouse prepared once, whatever the number of hosts.
In ``--dry`` runs nothing is fetched or built: the plan says it would be.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from rbee.deploy.wheelhouse import Wheelhouse, build_wheelhouse
from rbee.engine.features import FeatureSet
from rbee.engine.wheelcache import build_wheel, cached_wheel
from rbee.models import FetchedModel, cached_model, fetch_model
from rbee.models.progress import progress_bar, rich_progress_callback
from rbee.spec.models import ModelSpec

DRY_RUN = "--dry" in sys.argv  # pyinfra does not expose --dry to deploy code

_models: dict[str, FetchedModel | None] = {}
_wheels: dict[str, Path | None] = {}
_wheelhouses: dict[str, Wheelhouse] = {}


def model_file(raw: dict[str, Any], cache_dir: str) -> FetchedModel | None:
    """The verified local copy of a model (fetched now if needed; ``None`` in a dry run without it)."""
    model = ModelSpec.model_validate(raw)
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


def wheelhouse(python: str, arch: str) -> Wheelhouse:
    """rbee and its dependencies as wheels for a target (cheap when nothing changed)."""
    key = f"{python}-{arch}"
    if key not in _wheelhouses:
        _wheelhouses[key] = build_wheelhouse(python, arch)
    return _wheelhouses[key]
