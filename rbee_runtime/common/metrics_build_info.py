"""``rbee_build_info{service,version,python}``: the one build-info gauge every rbee service exports."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Info

from rbee_runtime import __version__


def add_build_info(registry: CollectorRegistry, service: str) -> None:
    """Register ``rbee_build_info`` (value 1) for ``service`` (``queen``, ``hive``, ``worker``) in ``registry``."""
    info = Info("rbee_build", "Version of rbee and of Python this service runs.", registry=registry)
    info.info({"service": service, "version": __version__, "python": platform.python_version()})
