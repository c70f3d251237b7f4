"""Wire contracts between the queen, the hives and the workers (pydantic models).

The services import these models instead of redefining payloads, so a change of
the protocol is one change here. The HTTP endpoints that carry them are listed in
``docs/api.md``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rbee_runtime.common.limits import (
    MAX_HEARTBEAT_MODELS,
    MAX_HEARTBEAT_WORKERS,
    MAX_ID_CHARS,
    MAX_MESSAGES,
    MAX_STOP,
    MAX_STOP_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOKENS,
)


class WorkerState(StrEnum):
    """Life cycle of a worker: ``loading → idle ⇄ busy → draining → stopped``; ``crashed`` on failure."""

    LOADING = "loading"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    CRASHED = "crashed"
    STOPPED = "stopped"


def check_text(value: Any) -> Any:
    """``value`` when every string in it (a string, or a list of strings) is valid Unicode text.

    Python's ``json`` decodes an escaped lone UTF-16 surrogate (``"\\ud800"``) into a string no encoder
    can write; such a string would fail deep in the engine or in a response, so it is refused at the door.
    """
    for item in value if isinstance(value, list | tuple) else (value,):
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise PydanticCustomError(
                    "invalid_unicode",
                    "is not valid Unicode text: it holds a lone UTF-16 surrogate (U+{code:04X}) at character {at}",
                    {"code": ord(item[exc.start]), "at": exc.start},
                ) from None
    return value


class Wire(BaseModel):
    """Base of every payload: unknown fields are ignored so peers of other versions interoperate.

    Numbers must be finite (``NaN``/``Infinity``, which Python's ``json`` accepts, are refused) and strings
    valid Unicode (:func:`check_text`), so nothing taken in can break an encoder later.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        return check_text(value)


# --------------------------------------------------------------------------- worker


class ChatMessage(Wire):
    """A chat message as the model's chat template gets it (the tool fields only where given)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_TEXT_CHARS)
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ToolSpec(Wire):
    """A tool an answer may call: its name and the JSON schema of its arguments (None: any JSON object)."""

    name: str
    parameters: dict[str, Any] | None = None


#: The seeds llama.cpp takes (an unsigned 32-bit number).
MAX_SEED = 2**32 - 1


class GenerateRequest(Wire):
    """One generation as a worker's engine runs it, built from an OpenAI body
    (:mod:`~.openai_requests`): exactly one of ``prompt`` or ``messages`` (sizes: :mod:`~.limits`)."""

    request_id: str = Field(min_length=1, max_length=128)
    prompt: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=MAX_MESSAGES)
    max_tokens: int = Field(default=64, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    #: Token id → bias added to its logit.
    logit_bias: dict[int, float] = Field(default_factory=dict)
    #: Log probabilities in the answer: None none; N the chosen token's and its N best alternatives'.
    logprobs: int | None = Field(default=None, ge=0, le=20)
    #: The answer is a JSON object (``json_object``) / JSON matching this schema (``json_schema``).
    json_object: bool = False
    json_schema: dict[str, Any] | None = None
    #: The tools given to the chat template, and those one of which the answer must call (its arguments
    #: constrained to the tool's schema); empty: the answer is text.
    tools: list[dict[str, Any]] | None = None
    call_tools: list[ToolSpec] = Field(default_factory=list)

    @field_validator("stop")
    @classmethod
    def _short_stops(cls, value: list[str]) -> list[str]:
        return check_stops(value)

    @model_validator(mode="after")
    def _messages_fit(self) -> GenerateRequest:
        check_total_chars([m.content for m in self.messages or ()])
        return self


def check_stops(stops: list[str]) -> list[str]:
    """``stops`` when none is longer than :data:`MAX_STOP_CHARS` characters."""
    for i, stop in enumerate(stops):
        if len(stop) > MAX_STOP_CHARS:
            raise PydanticCustomError(
                "stop_too_long", "stop sequence {i} has {n} characters; at most {most} are allowed",
                {"i": i, "n": len(stop), "most": MAX_STOP_CHARS},
            )  # fmt: skip
    return stops


def check_total_chars(texts: list[str]) -> None:
    """Refuse chat messages longer than :data:`MAX_TEXT_CHARS` characters together (error at ``messages``)."""
    total = sum(len(t) for t in texts)
    if total > MAX_TEXT_CHARS:
        raise PydanticCustomError(
            "messages_too_long",
            "messages: the messages hold {n} characters together; at most {most} are allowed",
            {"n": total, "most": MAX_TEXT_CHARS},
        )


class EndEvent(Wire):
    """How a generation ended (successfully or cancelled): the generation thread's last item, internal to a
    worker (the OpenAI routes write its finish reason and usage)."""

    type: Literal["end"] = "end"
    tokens_out: int
    prompt_tokens: int
    stop_reason: Literal["length", "stop", "cancelled"]
    decode_ms: float


class ErrorEvent(Wire):
    """How a generation failed (``field``: the request field at fault, for client errors): internal, the
    generation thread's last item on a worker and the queen's record of a worker's error answer."""

    type: Literal["error"] = "error"
    code: str
    message: str
    field: str | None = None


class WorkerHealth(Wire):
    """``GET /health`` on a worker."""

    status: Literal["ok", "error"]
    worker_id: str
    model_id: str
    state: WorkerState
    slots_total: int
    slots_busy: int
    tokens_generated_total: int
    requests_cancelled_total: int = 0
    #: Layers offloaded to the GPU (-1: all, 0: none / backend cpu); None before the offload is decided.
    n_gpu_layers: int | None = None
    #: Layers of the model (GGUF ``block_count``); None when unknown.
    layers_total: int | None = None
    #: The error code of a failed load (``VRAM_OOM``, ``GPU_NOT_AVAILABLE``, ...), with ``status`` ``error``.
    error_code: str | None = None


#: Who owns a worker's process: the hive that spawned it, or something else (e.g. a systemd unit).
ManagedBy = Literal["hive", "external"]


class WorkerReady(Wire):
    """``POST /v1/workers/ready`` on the hive: a worker's callback once its model is loaded.

    Re-sent every ``--announce-interval`` seconds for the worker's whole life; an ``external`` worker
    the hive does not know yet is registered by it.
    """

    worker_id: str
    url: str
    model_id: str
    backend: str
    device: int
    slots_total: int
    pid: int
    managed_by: ManagedBy = "hive"


# --------------------------------------------------------------------------- hive


class WorkerInfo(Wire):
    """A worker as the hive (and, through heartbeats, the queen) knows it."""

    worker_id: str
    hive_id: str
    model_id: str
    url: str
    state: WorkerState
    backend: str = "cpu"
    device: int = 0
    slots_total: int = 1
    pid: int | None = None
    started_at: float
    last_activity: float
    restarts: int = 0
    last_error: str | None = None
    #: The error code of the worker's last failure when it reported one (e.g. ``VRAM_OOM``).
    last_error_code: str | None = None
    managed_by: ManagedBy = "hive"


class SpawnRequest(Wire):
    """``POST /v1/workers`` on the hive."""

    model_id: str = Field(max_length=MAX_ID_CHARS)
    slots: int | None = Field(default=None, ge=1, le=64)
    ctx_size: int | None = Field(default=None, ge=64)
    backend: str | None = None
    device: int | None = Field(default=None, ge=0)
    #: Layers to offload to the GPU (-1 all, 0 none); None: decided from the GPU's free VRAM (backend cuda/metal).
    n_gpu_layers: int | None = Field(default=None, ge=-1)


class CatalogEntry(Wire):
    """One row of a hive's SQLite model catalog."""

    model_id: str
    reference: str
    provider: str
    local_path: str
    size_bytes: int
    sha256: str | None = None
    added_at: float


class RegisterModelRequest(Wire):
    """``POST /v1/models`` on the hive: put a model file that is already on disk into the catalog."""

    model_id: str = Field(max_length=MAX_ID_CHARS)
    reference: str
    local_path: str
    sha256: str | None = None


class GpuInfo(Wire):
    """One NVIDIA GPU of a hive (NVML, else ``nvidia-smi``); a fact the driver could not report is ``None``.

    Memory the driver does not report (e.g. a MIG-enabled GPU) is 0 total and 0 free: the GPU is listed,
    and a worker is placed on it only when asked for by index. Fields after ``memory_free_bytes`` are
    optional, so older peers interoperate.
    """

    index: int
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    temperature_c: int | None = None
    compute_cap: str | None = None
    driver_version: str | None = None
    mig: bool = False


class Resources(Wire):
    ram_total_bytes: int
    ram_available_bytes: int
    disk_total_bytes: int
    disk_available_bytes: int
    cpu_count: int
    gpus: list[GpuInfo] = Field(default_factory=list)


class HiveCapabilities(Wire):
    """``GET /v1/capabilities`` on the hive."""

    hive_id: str
    version: str
    backends: list[str]
    resources: Resources


class Heartbeat(Wire):
    """``POST /v1/hives/heartbeat`` on the queen: a hive's registration and periodic report."""

    hive_id: str
    url: str
    version: str
    backends: list[str]
    resources: Resources
    models: list[str] = Field(max_length=MAX_HEARTBEAT_MODELS)
    workers: list[WorkerInfo] = Field(max_length=MAX_HEARTBEAT_WORKERS)
    max_workers: int = 4


class HealthResponse(Wire):
    """``GET /health`` of the queen and of the hive."""

    status: Literal["ok"] = "ok"
    service: Literal["queen", "hive", "worker"]
    version: str
    api_version: str = "v1"
    id: str | None = None


# --------------------------------------------------------------------------- queen


class RejectedWorker(Wire):
    """A worker of a heartbeat the queen did not take (its id belongs to a worker of another live hive)."""

    worker_id: str
    code: Literal["WORKER_ALREADY_REGISTERED"] = "WORKER_ALREADY_REGISTERED"
    message: str
    owner_hive_id: str


class HeartbeatAck(Wire):
    """Answer of ``POST /v1/hives/heartbeat``: the queen took the heartbeat.

    ``rejected_workers``: workers of the heartbeat left out because another online hive already
    reports a live worker with the same id (the rest of the heartbeat is taken).
    """

    status: Literal["ok"] = "ok"
    queen_id: str
    heartbeat_interval_s: float
    stale_timeout_s: float
    rejected_workers: list[RejectedWorker] = Field(default_factory=list)


class HiveDeregistered(Wire):
    """Answer of ``DELETE /v1/hives/{hive_id}``: whether the queen knew the hive, and the workers it forgot with it."""

    hive_id: str
    deregistered: bool
    workers: list[str] = Field(default_factory=list)


class QueenHive(Wire):
    """A hive as ``GET /v1/hives`` on the queen shows it."""

    hive_id: str
    url: str
    status: Literal["online", "stale"]
    last_heartbeat_age_s: float
    version: str
    backends: list[str]
    models: list[str]
    max_workers: int
    workers: int
    resources: Resources


class QueenWorker(WorkerInfo):
    """A worker as ``GET /v1/workers`` on the queen shows it (``status``: that of its hive)."""

    status: Literal["online", "stale"]
    routable: bool
    in_flight: int
