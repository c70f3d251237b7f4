"""Operations routes: health, metrics, the cluster view, and the hives' heartbeats."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from rbee_runtime import __version__
from rbee_runtime.common.contracts import HealthResponse, Heartbeat, HeartbeatAck, QueenHive, QueenWorker
from rbee_runtime.queen.auth import require_api_key
from rbee_runtime.queen.metrics import CONTENT_TYPE
from rbee_runtime.queen.state import QueenState, get_state

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


@open_router.post("/v1/hives/heartbeat")
async def heartbeat(beat: Heartbeat, state: QueenState = Depends(get_state)) -> HeartbeatAck:
    """A hive's registration and periodic report (internal)."""
    state.registry.apply_heartbeat(beat)
    state.scheduler.dispatch()
    cfg = state.config
    return HeartbeatAck(
        queen_id=cfg.queen_id, heartbeat_interval_s=cfg.heartbeat_interval_s, stale_timeout_s=cfg.stale_timeout_s
    )


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
