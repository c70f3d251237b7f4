"""The queen's internal routes: the hives' heartbeats (``POST /v1/hives/heartbeat``) and a hive's deregistration
(``DELETE /v1/hives/{hive_id}``, by a deploy that pruned its host).

Both are taken only with the credential of the hive they name (when the queen has a cluster secret: the deploy
derives it from that secret), a heartbeat only when every worker it lists is that hive's, on its host
(:mod:`.internal_plane`). Client API keys do not open them; without a cluster secret the deregistration needs the
API key (when the queen has keys).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request

from rbee_runtime.common.contracts import Heartbeat, HeartbeatAck, HiveDeregistered, RejectedWorker
from rbee_runtime.queen.api_ops import check_hive_version
from rbee_runtime.queen.auth import ApiKeys
from rbee_runtime.queen.internal_plane import check_workers_belong
from rbee_runtime.queen.state import QueenState, get_state

log = logging.getLogger(__name__)

router = APIRouter(tags=["internal"])


@router.post("/v1/hives/heartbeat", include_in_schema=False)
async def heartbeat(beat: Heartbeat, request: Request, state: QueenState = Depends(get_state)) -> HeartbeatAck:
    """A hive's registration and periodic report.

    401/403 without the hive's own credential, 403 ``WORKER_URL_NOT_ON_HIVE`` for a worker that is not the
    hive's, 409 ``VERSION_MISMATCH`` for a hive of an incompatible release (nothing of it is recorded).
    """
    state.credentials.check_heartbeat(request.headers.get("authorization"), beat.hive_id)
    check_workers_belong(beat)
    check_hive_version(beat.hive_id, beat.version)
    outcome = state.registry.record_heartbeat(beat)
    if outcome.returned:
        log.warning(
            "hive %s was deregistered but heartbeats again: registered again (if a deploy pruned its host, "
            "rbee-hive still runs there)", beat.hive_id,
        )  # fmt: skip
    rejected = []
    for r in outcome.rejected:
        message = (
            f"Worker id {r.worker_id!r} is already registered by hive {r.owner_hive_id!r}, which reports it "
            f"live; hive {beat.hive_id!r} cannot register a worker with the same id. Give every worker its own id."
        )
        log.warning("heartbeat of %s: %s", beat.hive_id, message)
        rejected.append(RejectedWorker(worker_id=r.worker_id, message=message, owner_hive_id=r.owner_hive_id))
    state.scheduler.dispatch()
    cfg = state.config
    return HeartbeatAck(
        queen_id=cfg.queen_id,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        stale_timeout_s=cfg.stale_timeout_s,
        rejected_workers=rejected,
    )


@router.delete("/v1/hives/{hive_id}")
async def deregister(hive_id: str, request: Request, state: QueenState = Depends(get_state)) -> HiveDeregistered:
    """Forget a hive and its workers now (a deploy that pruned its host, once its services are stopped).

    Idempotent: ``deregistered`` is false for a hive the queen does not know. 401/403 without the hive's credential
    (with a cluster secret), else without an API key (when the queen has keys). A hive that heartbeats afterwards
    registers again, with a warning in the queen's log.
    """
    authorization = request.headers.get("authorization")
    if state.credentials.enabled:
        state.credentials.check_heartbeat(authorization, hive_id, what="Deregistering a hive")
    else:
        keys: ApiKeys = request.app.state.api_keys
        keys.check(authorization)
    workers = state.registry.deregister(hive_id)
    if workers is not None:
        log.info("hive %s deregistered with its workers %s", hive_id, ", ".join(workers) or "(none)")
    return HiveDeregistered(hive_id=hive_id, deregistered=workers is not None, workers=workers or [])
