"""The cluster spec: models, loading with located errors, placement and inventory."""

from rbee.spec.issues import SpecError, SpecIssue
from rbee.spec.loader import load_spec, parse_spec
from rbee.spec.models import ClusterSpec, HostSpec, ModelSpec, PlacementSpec

__all__ = [
    "ClusterSpec",
    "HostSpec",
    "ModelSpec",
    "PlacementSpec",
    "SpecError",
    "SpecIssue",
    "load_spec",
    "parse_spec",
]
