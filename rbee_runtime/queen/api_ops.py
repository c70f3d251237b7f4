"""Operations routes: health, metrics and the cluster view (the hives' heartbeats: :mod:`.api_internal`)."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Depends, Response

from rbee_runtime import __version__
from rbee_runtime.common.contracts import HealthResponse, QueenHive, QueenWorker
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.auth import require_api_key
from rbee_runtime.queen.metrics import CONTENT_TYPE
from rbee_runtime.queen.state import QueenState, get_state

log = logging.getLogger(__name__)

_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:[.+-].*)?$")


def major_minor(version: str) -> tuple[int, int] | None:
    """``0.1.3`` → ``(0, 1)``; None for a version that is not a release number (e.g. a test build)."""
    match = _RELEASE.match(version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_hive_version(hive_id: str, hive_version: str, queen_version: str = __version__) -> None:
    """Refuse (409 ``VERSION_MISMATCH``) a hive whose major.minor version differs from the queen's.

    Releases with the same major.minor speak the same protocol (patch releases interoperate). A version
    that is not a release number on either side is let through (there is nothing to compare).
    """
    hive_mm, queen_mm = major_minor(hive_version), major_minor(queen_version)
    if hive_mm is None or queen_mm is None or hive_mm == queen_mm:
        return
    older, target = ("hive", queen_version) if queen_mm > hive_mm else ("queen", hive_version)
    raise ApiError(
        409,
        ErrorCode.VERSION_MISMATCH,
        f"Hive {hive_id!r} runs rbee {hive_version} but the queen runs {queen_version}: versions "
        f"{hive_mm[0]}.{hive_mm[1]}.x and {queen_mm[0]}.{queen_mm[1]}.x are not compatible. Upgrade the "
        f"{older} to rbee {target} (deploy the same rbee release to every host); the hive's heartbeats are "
        "taken again once the versions match.",
        {
            "hive_id": hive_id,
            "hive_version": hive_version,
            "queen_version": queen_version,
            "upgrade": older,
        },
    )

open_router = APIRouter(tags=["operations"])
router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["operations"])


@open_router.get("/health")
async def health(state: QueenState = Depends(get_state)) -> HealthResponse:
    """Liveness of the queen."""
    return HealthResponse(service="queen", version=__version__, id=state.config.queen_id)


@open_router.get("/metrics", response_class=Response)
async def metrics(state: QueenState = Depends(get_state)) -> Response:
    """Prometheus text exposition."""
    body = state.metrics.render(state.registry, state.scheduler.queue_depths())
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/hives")
async def list_hives(state: QueenState = Depends(get_state)) -> dict[str, list[QueenHive]]:
    """The hives the queen knows (online or stale)."""
    return {
        "hives": [
            QueenHive(
                hive_id=h.heartbeat.hive_id,
                url=h.heartbeat.url,
                status=h.status,
                last_heartbeat_age_s=round(h.age_s, 3),
                version=h.heartbeat.version,
                backends=h.heartbeat.backends,
                models=h.heartbeat.models,
                max_workers=h.heartbeat.max_workers,
                workers=len(h.heartbeat.workers),
                resources=h.heartbeat.resources,
            )
            for h in state.registry.hives()
        ]
    }


@router.get("/workers")
async def list_workers(state: QueenState = Depends(get_state)) -> dict[str, list[QueenWorker]]:
    """The workers the queen knows, with their hive's status and the requests in flight."""
    return {
        "workers": [
            QueenWorker(
                **w.info.model_dump(),
                status=w.status,
                routable=w.routable,
                in_flight=state.scheduler.inflight(w.info.worker_id),
            )
            for w in state.registry.workers()
        ]
    }
