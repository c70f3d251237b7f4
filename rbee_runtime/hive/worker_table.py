"""The ``workers`` table of ``catalog.db``: one JSON record per worker, to find it again after a hive restart.

A record is :class:`WorkerRecord` for a worker the hive started (its spec, port, pid and
process start time) or :class:`ExternalRecord` for one it only watches (what it announced).
The table itself stores the JSON as text; :func:`parse_record` reads it back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ValidationError

from rbee_runtime.common.contracts import WorkerInfo
from rbee_runtime.hive.state_db import StateDb


class WorkerSpec(BaseModel):
    """What a worker runs; kept across restarts and persisted for re-adoption."""

    worker_id: str
    model_id: str
    model_path: str
    model_size_bytes: int
    slots: int
    ctx_size: int
    backend: str
    device: int
    #: ``--n-gpu-layers`` of the worker (None: the worker decides from its GPU's free VRAM).
    n_gpu_layers: int | None = None
    placement: str | None = None
    log_path: str
    #: ``--embedding``: an embedding model's worker.
    embedding: bool = False


class WorkerRecord(BaseModel):
    """Row of the ``workers`` table: enough to find the process again after a hive restart."""

    spec: WorkerSpec
    port: int
    local_url: str
    pid: int
    create_time: float
    info: WorkerInfo


class ExternalRecord(BaseModel):
    """Row of the ``workers`` table for an external worker: no process of the hive's, only what it announced."""

    managed_by: Literal["external"]
    info: WorkerInfo


@dataclass(frozen=True)
class StoredWorker:
    """One row of the ``workers`` table: the worker id and its JSON record."""

    worker_id: str
    record: str


def parse_record(record: str) -> WorkerRecord | ExternalRecord | None:
    """The typed record of a row (None when it is neither kind)."""
    for kind in (ExternalRecord, WorkerRecord):
        try:
            return kind.model_validate_json(record)
        except ValidationError:
            continue
    return None


class WorkerTable:
    """The ``workers`` table in the hive's :class:`StateDb` (the model catalog's database)."""

    def __init__(self, db: StateDb) -> None:
        self.db = db

    def save(self, worker_id: str, record: str) -> None:
        self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO workers (worker_id, record, updated_at) VALUES (?, ?, ?)",
                (worker_id, record, time.time()),
            )
        )

    def save_record(self, record: WorkerRecord | ExternalRecord) -> None:
        self.save(record.info.worker_id, record.model_dump_json())

    def delete(self, worker_id: str) -> None:
        self.db.run(lambda c: c.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)))

    def load(self) -> list[StoredWorker]:
        """Every row, oldest change first."""
        rows = self.db.run(lambda c: c.execute("SELECT worker_id, record FROM workers ORDER BY updated_at").fetchall())
        return [StoredWorker(r["worker_id"], r["record"]) for r in rows]
