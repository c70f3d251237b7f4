"""Models of the spec, fetched once into the control machine's cache: resumable, verified, atomic."""

from rbee.models.cache import FetchedModel, cache_paths
from rbee.models.errors import FetchErrorCode, ModelFetchError
from rbee.models.fetch import cached_model, fetch_model
from rbee.models.progress import FetchProgress, ProgressCallback, progress_bar, rich_progress_callback
from rbee.models.sources import ResolvedSource, resolve_source

__all__ = [
    "FetchErrorCode",
    "FetchProgress",
    "FetchedModel",
    "ModelFetchError",
    "ProgressCallback",
    "ResolvedSource",
    "cache_paths",
    "cached_model",
    "fetch_model",
    "progress_bar",
    "resolve_source",
    "rich_progress_callback",
]
