"""The hive's HTTP API (``docs/api.md``, hive section): one router per resource."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import Field

from rbee_runtime.common.contracts import (
    CatalogEntry,
    HealthResponse,
    HiveCapabilities,
    RegisterModelRequest,
    SpawnRequest,
    Wire,
    WorkerInfo,
    WorkerReady,
)
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError, install_error_handlers
from rbee_runtime.common.internal_auth import require
from rbee_runtime.common.limits import HIVE_MAX_BODY_BYTES, install_limits
from rbee_runtime.hive import catalog_backup, model_paths
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.metrics import HiveMetrics
from rbee_runtime.hive.service import Hive


class ModelList(Wire):
    """``GET /v1/models`` on the hive."""

    models: list[CatalogEntry]


class WorkerList(Wire):
    """``GET /v1/workers`` on the hive."""

    workers: list[WorkerInfo]


class RefusedModel(Wire):
    """A model of a backup that was not restored (``MODEL_PATH_NOT_ALLOWED``, ``CHECKSUM_MISMATCH``)."""

    model_id: str
    code: str
    reason: str


class CatalogRestoreResult(Wire):
    """``POST /v1/catalog/restore`` on the hive: the models now in the catalog, and those refused."""

    restored: list[str]
    missing_files: list[str]
    refused: list[RefusedModel] = Field(default_factory=list)


#: The largest catalog backup ``POST /v1/catalog/restore`` reads (a catalog is a few hundred KB).
MAX_BACKUP_BYTES = 64 * 1024 * 1024


def get_hive(request: Request) -> Hive:
    hive: Hive = request.app.state.hive
    return hive


system = APIRouter(tags=["system"])
models = APIRouter(prefix="/v1/models", tags=["models"])
workers = APIRouter(prefix="/v1/workers", tags=["workers"])
catalog = APIRouter(prefix="/v1/catalog", tags=["catalog"])
#: A worker's ready callback: the one hive route its workers' credential opens too.
workers_ready = APIRouter(prefix="/v1/workers", tags=["workers"], dependencies=[Depends(require("hive", "worker"))])


@system.get("/health")
async def health(hive: Hive = Depends(get_hive)) -> HealthResponse:
    return HealthResponse(service="hive", version=hive.version, id=hive.config.hive_id)


@system.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition (GPU figures read now, in a thread)."""
    hive_metrics: HiveMetrics = request.app.state.metrics
    return Response(await asyncio.to_thread(hive_metrics.render), media_type=CONTENT_TYPE_LATEST)


@system.get("/v1/capabilities")
def capabilities(hive: Hive = Depends(get_hive)) -> HiveCapabilities:
    return hive.capabilities()


@models.get("")
def list_models(provider: str | None = None, hive: Hive = Depends(get_hive)) -> ModelList:
    return ModelList(models=hive.catalog.list_models(provider))


@models.post("", status_code=201)
def register_model(req: RegisterModelRequest, hive: Hive = Depends(get_hive)) -> CatalogEntry:
    """Runs in the thread pool: hashing a large file never holds up the event loop."""
    model_paths.confine(req.model_id, req.local_path, model_paths.model_roots(hive.config))
    entry = hive.catalog.register(req)
    hive.catalog_changed()
    return entry


@models.delete("/{model_id:path}", status_code=204)
def remove_model(model_id: str, hive: Hive = Depends(get_hive)) -> Response:
    if not hive.catalog.remove(model_id):
        raise ApiError(
            404,
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {model_id!r} is not in this hive's catalog (GET /v1/models lists it).",
            {"model_id": model_id},
        )
    hive.catalog_changed()
    return Response(status_code=204)


@catalog.get("/backup", response_class=Response)
def backup_catalog(hive: Hive = Depends(get_hive)) -> Response:
    """A consistent copy of ``catalog.db`` (SQLite online backup), as a download."""
    tmp = hive.config.data_dir / f".backup-{uuid.uuid4().hex}.db"
    try:
        catalog_backup.backup(hive.catalog, tmp)
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    name = f"catalog-{hive.config.hive_id}-{time.strftime('%Y%m%dT%H%M%S')}.db"
    return Response(
        data, media_type="application/vnd.sqlite3", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@catalog.post("/restore")
async def restore_catalog(request: Request, hive: Hive = Depends(get_hive)) -> CatalogRestoreResult:
    """Replace the model catalog with the one of a backup (the request body: the SQLite file)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BACKUP_BYTES:
            raise ApiError(
                400,
                ErrorCode.CATALOG_BACKUP_INVALID,
                f"The backup is larger than {MAX_BACKUP_BYTES // 2**20} MiB: that is not a catalog backup. "
                "The catalog was not changed.",
                {"max_bytes": MAX_BACKUP_BYTES},
            )
    tmp = hive.config.data_dir / f".restore-{uuid.uuid4().hex}.db"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        roots = model_paths.model_roots(hive.config)
        report = await asyncio.to_thread(catalog_backup.restore, hive.catalog, tmp, roots)
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(OSError):
                leftover.unlink()
    hive.catalog_changed()
    refused = [RefusedModel(model_id=r.model_id, code=r.code, reason=r.reason) for r in report.refused]
    return CatalogRestoreResult(restored=report.restored, missing_files=report.missing_files, refused=refused)


@workers.get("")
async def list_workers(hive: Hive = Depends(get_hive)) -> WorkerList:
    return WorkerList(workers=hive.registry.list())


@workers.post("", status_code=202)
async def spawn_worker(req: SpawnRequest, hive: Hive = Depends(get_hive)) -> WorkerInfo:
    req = await asyncio.to_thread(hive.gpu_preflight, req)
    return await hive.supervisor.spawn(req)


@workers_ready.post("/ready")
async def worker_ready(msg: WorkerReady, hive: Hive = Depends(get_hive)) -> WorkerInfo:
    hive.check_ready_claim(msg)
    return hive.supervisor.ready(msg)


@workers.delete("/{worker_id}", status_code=204)
async def stop_worker(worker_id: str, hive: Hive = Depends(get_hive)) -> Response:
    await hive.supervisor.stop(worker_id)
    return Response(status_code=204)


def create_app(config: HiveConfig) -> FastAPI:
    """The hive application; its lifespan starts and stops the workers and the background loops."""
    hive = Hive(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hive.start()
        try:
            yield
        finally:
            await hive.stop()

    app = FastAPI(
        title=f"rbee hive {config.hive_id}", version=hive.version, lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )  # fmt: skip
    app.state.hive = hive
    app.state.metrics = HiveMetrics(hive)
    app.state.internal_auth = hive.internal_auth
    install_error_handlers(app)
    install_limits(app, HIVE_MAX_BODY_BYTES, {"/v1/catalog/restore": MAX_BACKUP_BYTES})
    hive_only = [Depends(require("hive"))]  # the queen and the control machine
    app.include_router(system, dependencies=hive_only)
    app.include_router(models, dependencies=hive_only)
    app.include_router(workers_ready)
    app.include_router(workers, dependencies=hive_only)
    app.include_router(catalog, dependencies=hive_only)
    return app
