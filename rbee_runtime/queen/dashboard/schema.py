"""The JSON of ``GET /ui/api/state``: one snapshot of the cluster for the dashboard and ``rbee top``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rbee_runtime.common.contracts import GpuInfo, Wire


class HostView(Wire):
    """A machine, as its hive's last heartbeat describes it (``gpus`` empty: CPU only)."""

    hive_id: str
    host: str
    status: Literal["online", "stale"]
    version: str
    last_heartbeat_age_s: float
    backends: list[str]
    cpu_count: int
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GpuInfo] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    workers: int
    max_workers: int


class WorkerView(Wire):
    """A worker: ``slots_busy`` are the requests the queen has on it; ``status`` that of its hive."""

    worker_id: str
    hive_id: str
    model_id: str
    backend: str
    device: int
    state: str
    status: Literal["online", "stale"]
    routable: bool
    slots_busy: int
    slots_total: int
    uptime_s: float | None
    restarts: int
    pid: int | None = None
    managed_by: str = "hive"
    last_error: str | None = None


class ModelView(Wire):
    """A model: its workers, slots, queue, and traffic over the last minute (``None``: no request)."""

    model_id: str
    workers: int
    slots_busy: int
    slots_total: int
    queued: int
    tokens_per_s: float
    requests_per_s: float
    ttft_avg_s: float | None = None


class RatePoint(Wire):
    """Traffic of one step of the history, ending at ``at`` (wall clock)."""

    at: float
    tokens_per_s: float
    requests_per_s: float
    errors: int
    ttft_avg_s: float | None = None


class Rates(Wire):
    """Traffic of the whole cluster over ``window_s`` (first-token latency: ``ttft_window_s``), and its history."""

    window_s: float
    tokens_per_s: float
    requests_per_s: float
    errors: int
    ttft_window_s: float
    ttft_avg_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    step_s: float
    series: list[RatePoint] = Field(default_factory=list)


class ErrorView(Wire):
    """A recent error or warning: when (wall clock), where it came from, what happened."""

    at: float
    source: Literal["request", "worker", "hive", "queen"]
    message: str


class DashboardState(Wire):
    """Everything the dashboard shows, at ``now`` (the queen's wall clock)."""

    queen_id: str
    version: str
    now: float
    api_keys: bool
    hosts: list[HostView]
    workers: list[WorkerView]
    models: list[ModelView]
    rates: Rates
    errors: list[ErrorView]
