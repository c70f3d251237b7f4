"""The objects one queen app owns, reachable from routes through a FastAPI dependency."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from fastapi import Request

from rbee_runtime.queen.auth import ApiKeys
from rbee_runtime.queen.config import QueenConfig
from rbee_runtime.queen.inference import InferenceService
from rbee_runtime.queen.internal_plane import QueenCredentials
from rbee_runtime.queen.metrics import QueenMetrics
from rbee_runtime.queen.registry import Registry
from rbee_runtime.queen.scheduler import Scheduler


@dataclass
class QueenState:
    """Config, registry, scheduler, inference service, metrics, credentials and the shared HTTP client."""

    config: QueenConfig
    registry: Registry
    scheduler: Scheduler
    inference: InferenceService
    metrics: QueenMetrics
    api_keys: ApiKeys
    credentials: QueenCredentials
    http: httpx.AsyncClient


async def get_state(request: Request) -> QueenState:
    """FastAPI dependency: the state of the app serving this request (async: no thread-pool hop)."""
    state: QueenState = request.app.state.queen
    return state
