"""The models of a deploy run on the control machine: each one's verified local copy (fetched once for all hosts, when
the run may), its size for the host's plan and its sha256 for the release record."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from rbee.deploy.host_plan import HostPlan
from rbee.deploy.layout import HostLayout
from rbee.deploys.control_run import host_state, once, slow_work_allowed, spec
from rbee.models import FetchedModel, cached_model, fetch_model
from rbee.models.progress import progress_bar, rich_progress_callback
from rbee.spec.models import ClusterSpec, ModelSpec

_models: dict[str, FetchedModel | None] = {}


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


def model_checksums(plan: HostPlan) -> dict[str, str | None]:
    """Each model of a host → its sha256 (not fetched yet: the spec's pinned ``sha256``, else ``None``)."""
    cluster = spec()
    out: dict[str, str | None] = {}
    for model_id in plan.models:
        out[model_id] = model_sha256(cluster.model(model_id), cluster)
    return out
