"""What every part of the hive's worker supervision works with, handed over as one object."""

from __future__ import annotations

from dataclasses import dataclass

from rbee_runtime.hive.catalog import Catalog
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.registry import WorkerRegistry
from rbee_runtime.hive.worker_client import WorkerClient
from rbee_runtime.hive.worker_table import WorkerTable


@dataclass(frozen=True)
class HiveParts:
    """The hive's config, model catalog, worker table, live registry and HTTP client for its workers."""

    config: HiveConfig
    catalog: Catalog
    table: WorkerTable
    registry: WorkerRegistry
    client: WorkerClient


class HiveRoom:
    """Base of the supervision rooms: the parts as attributes (``self.config``, ``self.catalog``, ...)."""

    def __init__(self, parts: HiveParts) -> None:
        self.parts = parts
        self.config = parts.config
        self.catalog = parts.catalog
        self.table = parts.table
        self.registry = parts.registry
        self.client = parts.client
