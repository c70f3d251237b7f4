"""The stable machine codes of every rbee error response (``error.code`` in the JSON envelope), documented once.

One :class:`ErrorCode` member per code (a ``str`` subclass, so a member compares, formats and serialises
as its name), and one :class:`CodeDoc` per member in :data:`DOCS`: which service answers it with which
HTTP status, and what it means. The error-code table of ``docs/api.md`` is generated from :data:`DOCS`
(``python -m rbee_runtime.common.error_codes docs/api.md`` rewrites it; ``tests/test_error_codes.py``
fails when it differs).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal


class ErrorCode(StrEnum):
    """Every ``error.code`` an rbee service answers with."""

    ALL_SLOTS_BUSY = "ALL_SLOTS_BUSY"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    CATALOG_BACKUP_INVALID = "CATALOG_BACKUP_INVALID"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    CONTEXT_LENGTH_EXCEEDED = "CONTEXT_LENGTH_EXCEEDED"
    CUDA_DEVICE_FAILED = "CUDA_DEVICE_FAILED"
    DEVICE_UNAVAILABLE = "DEVICE_UNAVAILABLE"
    ENGINE_MISSING = "ENGINE_MISSING"
    GENERATION_FAILED = "GENERATION_FAILED"
    GPU_NOT_AVAILABLE = "GPU_NOT_AVAILABLE"
    GPU_TOO_HOT = "GPU_TOO_HOT"
    HIVE_SHUTTING_DOWN = "HIVE_SHUTTING_DOWN"
    HIVE_UNREACHABLE = "HIVE_UNREACHABLE"
    HTTP_ERROR = "HTTP_ERROR"
    INPUT_REJECTED = "INPUT_REJECTED"
    INSUFFICIENT_RAM = "INSUFFICIENT_RAM"
    INVALID_API_KEY = "INVALID_API_KEY"
    INVALID_INTERNAL_CREDENTIAL = "INVALID_INTERNAL_CREDENTIAL"
    INVALID_REQUEST = "INVALID_REQUEST"
    MAX_WORKERS = "MAX_WORKERS"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    MISSING_API_KEY = "MISSING_API_KEY"
    MISSING_INTERNAL_CREDENTIAL = "MISSING_INTERNAL_CREDENTIAL"
    MODEL_FILE_MISSING = "MODEL_FILE_MISSING"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_PATH_NOT_ALLOWED = "MODEL_PATH_NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    NO_FREE_PORT = "NO_FREE_PORT"
    NO_WORKER_AVAILABLE = "NO_WORKER_AVAILABLE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    QUEUE_FULL = "QUEUE_FULL"
    REQUEST_CANCELLED = "REQUEST_CANCELLED"
    REQUEST_ID_IN_USE = "REQUEST_ID_IN_USE"
    UNSUPPORTED_PARAMETER = "UNSUPPORTED_PARAMETER"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    VRAM_EXHAUSTED = "VRAM_EXHAUSTED"
    VRAM_OOM = "VRAM_OOM"
    WORKER_ALREADY_REGISTERED = "WORKER_ALREADY_REGISTERED"
    WORKER_URL_NOT_ON_HIVE = "WORKER_URL_NOT_ON_HIVE"
    WRONG_MODEL_TYPE = "WRONG_MODEL_TYPE"
    WORKER_DRAINING = "WORKER_DRAINING"
    WORKER_EXTERNALLY_MANAGED = "WORKER_EXTERNALLY_MANAGED"
    WORKER_FAILED = "WORKER_FAILED"
    WORKER_LOADING = "WORKER_LOADING"
    WORKER_NOT_FOUND = "WORKER_NOT_FOUND"
    WORKER_SPAWN_FAILED = "WORKER_SPAWN_FAILED"
    WORKER_START_TIMEOUT = "WORKER_START_TIMEOUT"
    WORKER_TIMEOUT = "WORKER_TIMEOUT"


Service = Literal["queen", "hive", "worker"]
#: ``ANY``: the status of the error passed on; ``None``: not an HTTP answer (the meaning says where it shows).
Status = int | Literal["any"] | None
ANY: Final = "any"


@dataclass(frozen=True)
class CodeDoc:
    """How one code is answered: the HTTP status per service that answers it, and what it means."""

    answers: Mapping[Service, Status]
    meaning: str

    def answered_by(self) -> str:
        """``queen 404, hive 404`` (``(any status)``, ``(not an HTTP status)``)."""
        def shown(status: Status) -> str:
            return "(any status)" if status == ANY else "(not an HTTP status)" if status is None else str(status)

        return ", ".join(f"{service} {shown(status)}" for service, status in self.answers.items())


DOCS: Final[Mapping[ErrorCode, CodeDoc]] = {
    ErrorCode.ALL_SLOTS_BUSY: CodeDoc(
        {"worker": 503}, "Every slot of the worker is taken (`Retry-After: 1`); the queen tries another worker."),
    ErrorCode.BACKEND_UNAVAILABLE: CodeDoc(
        {"hive": 400}, "The spawn asks for a backend (`cpu`, `cuda`, `metal`) this hive cannot run."),
    ErrorCode.CATALOG_BACKUP_INVALID: CodeDoc(
        {"hive": 400}, "The file to restore is not a sound catalog backup; the catalog is unchanged."),
    ErrorCode.CHECKSUM_MISMATCH: CodeDoc(
        {"hive": 400}, "The model file's sha256 is not the one given to register it."),
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: CodeDoc(
        {"worker": 400, "queen": 400}, "The prompt and `max_tokens` do not fit the worker's context."),
    ErrorCode.CUDA_DEVICE_FAILED: CodeDoc(
        {"worker": None},
        "Never sent: a CUDA worker's GPU exists but llama.cpp could not initialise it (driver, CUDA error); "
        "it exits 1 and the hive shows the code in the worker's `last_error_code`."),
    ErrorCode.DEVICE_UNAVAILABLE: CodeDoc(
        {"hive": 400, "worker": None},
        "The spawn names a GPU this hive does not have or may not use (worker: its `--device` is not among "
        "the GPUs it finds; it exits 1)."),
    ErrorCode.ENGINE_MISSING: CodeDoc(
        {"worker": None}, "Never sent: the worker's load failure when llama-cpp-python is missing; it exits 1."),
    ErrorCode.GENERATION_FAILED: CodeDoc(
        {"worker": 500, "queen": 502},
        "The engine failed while generating (before the first token the queen tries another worker)."),
    ErrorCode.GPU_NOT_AVAILABLE: CodeDoc(
        {"worker": None},
        "Never sent: a worker asked for backend `cuda`/`metal` but its llama.cpp has no GPU offload (a CPU "
        "build); it exits 1, no fallback to the CPU (`last_error_code` on the hive)."),
    ErrorCode.GPU_TOO_HOT: CodeDoc(
        {"hive": 503},
        "The GPU is over `gpu_max_temperature_c` (details `device`, `temperature_c`, `max_temperature_c`; "
        "`Retry-After`); a cooler GPU that fits is chosen when the spawn names none."),
    ErrorCode.HIVE_SHUTTING_DOWN: CodeDoc(
        {"hive": 503}, "The hive is stopping and starts no more workers."),
    ErrorCode.HIVE_UNREACHABLE: CodeDoc(
        {"queen": None}, "A hive the queen could not reach to start a worker (in `NO_WORKER_AVAILABLE` details)."),
    ErrorCode.HTTP_ERROR: CodeDoc(
        {"queen": ANY, "worker": ANY}, "Any other HTTP error of the web framework, with its status."),
    ErrorCode.INPUT_REJECTED: CodeDoc(
        {"worker": 400, "queen": 400},
        "The model cannot take the prompt or messages as given (its chat template refused them, or the engine "
        "could not encode the text); the message names the field. The worker stays in service."),
    ErrorCode.INSUFFICIENT_RAM: CodeDoc(
        {"hive": 507}, "Not enough free RAM for the model (details `required_bytes`, `available_bytes`)."),
    ErrorCode.INVALID_API_KEY: CodeDoc(
        {"queen": 401}, "The bearer key is not one of the queen's API keys."),
    ErrorCode.INVALID_INTERNAL_CREDENTIAL: CodeDoc(
        {"queen": 403, "hive": 403, "worker": 403},
        "An internal endpoint (heartbeat, hive or worker API) got a credential that is not the one it takes: "
        "another hive's, a worker's where a hive's is needed, or a client API key."),
    ErrorCode.INVALID_REQUEST: CodeDoc(
        {"queen": 422, "hive": 422, "worker": 422}, "The request is malformed; the message names the field."),
    ErrorCode.MAX_WORKERS: CodeDoc(
        {"hive": 409}, "The hive already runs `max_workers` workers."),
    ErrorCode.METHOD_NOT_ALLOWED: CodeDoc(
        {"queen": 405, "worker": 405}, "The path exists, but not with this method."),
    ErrorCode.MISSING_API_KEY: CodeDoc(
        {"queen": 401}, "The queen requires an API key and the request has none (`WWW-Authenticate: Bearer`)."),
    ErrorCode.MISSING_INTERNAL_CREDENTIAL: CodeDoc(
        {"queen": 401, "hive": 401, "worker": 401},
        "An internal endpoint was called without the cluster's internal credential (`WWW-Authenticate: Bearer`)."),
    ErrorCode.MODEL_FILE_MISSING: CodeDoc(
        {"hive": 400}, "The model's GGUF file is not on this machine."),
    ErrorCode.MODEL_LOAD_FAILED: CodeDoc(
        {"worker": None}, "Never sent: the worker's reason for a failed load (`EngineError`); it exits 1."),
    ErrorCode.MODEL_NOT_FOUND: CodeDoc(
        {"queen": 404, "hive": 404}, "No catalog holds the model; the queen's message lists those that exist."),
    ErrorCode.MODEL_PATH_NOT_ALLOWED: CodeDoc(
        {"hive": 400},
        "A `local_path` to register or restore is outside the hive's models folders (`<data_dir>/models` and "
        "the folders of the configured models); nothing is read there."),
    ErrorCode.NOT_FOUND: CodeDoc(
        {"queen": 404, "worker": 404}, "No such path."),
    ErrorCode.NO_FREE_PORT: CodeDoc(
        {"hive": 503}, "Every port of `worker_port_first..worker_port_last` is taken."),
    ErrorCode.NO_WORKER_AVAILABLE: CodeDoc(
        {"queen": 503}, "No worker took the request: queue wait over, no hive could start one, or failover spent."),
    ErrorCode.PAYLOAD_TOO_LARGE: CodeDoc(
        {"queen": 413, "hive": 413, "worker": 413},
        "The request body is over the listener's bound (queen and worker 4 MiB, hive 1 MiB, a catalog restore "
        "64 MiB; details `max_bytes`), with or without `Content-Length`."),
    ErrorCode.QUEUE_FULL: CodeDoc(
        {"queen": 503}, "Every worker of the model is busy and `queue_max` requests already wait (`Retry-After`)."),
    ErrorCode.REQUEST_CANCELLED: CodeDoc(
        {"queen": 499}, "The request was cancelled (`DELETE /v1/requests/{id}`); in a stream, its last error chunk."),
    ErrorCode.REQUEST_ID_IN_USE: CodeDoc(
        {"queen": 409, "worker": 409}, "A request with this id is already queued or running."),
    ErrorCode.WRONG_MODEL_TYPE: CodeDoc(
        {"queen": 400, "worker": 400},
        "The model does not serve this endpoint: an embedding model (placed with `embedding: true`) answers only "
        "`POST /v1/embeddings`, any other model only completions (`param` `model`)."),
    ErrorCode.UNSUPPORTED_PARAMETER: CodeDoc(
        {"queen": 400, "worker": 400},
        "An OpenAI request parameter rbee does not know or cannot honour (`n` > 1, `tool_choice` `auto`, ...); "
        "`param` names it. Nothing is ignored silently."),
    ErrorCode.UPSTREAM_ERROR: CodeDoc(
        {"queen": ANY}, "A worker or hive answered an error without the rbee envelope; its status is passed on."),
    ErrorCode.VERSION_MISMATCH: CodeDoc(
        {"queen": 409}, "A hive's heartbeat comes from another major.minor release (details say which to upgrade)."),
    ErrorCode.VRAM_EXHAUSTED: CodeDoc(
        {"hive": 507},
        "Not enough free VRAM on the GPU for the model (details `device`, `required_bytes`); with "
        "`gpu_partial_offload` only when not one layer fits."),
    ErrorCode.VRAM_OOM: CodeDoc(
        {"worker": None},
        "Never sent: llama.cpp could not allocate the model on the GPU while loading; the worker exits 1 and "
        "the hive shows the code in the worker's `last_error_code` (crashed)."),
    ErrorCode.WORKER_ALREADY_REGISTERED: CodeDoc(
        {"hive": 409, "queen": None},
        "The worker id belongs to another live worker (queen: in a heartbeat ack's `rejected_workers`)."),
    ErrorCode.WORKER_URL_NOT_ON_HIVE: CodeDoc(
        {"queen": 403},
        "A heartbeat lists a worker whose URL is not on the hive's own host (details `worker_id`, `url`, "
        "`hive_host`); nothing of that heartbeat is recorded, so no request is ever sent there."),
    ErrorCode.WORKER_DRAINING: CodeDoc(
        {"worker": 503}, "The worker is shutting down; the queen tries another worker."),
    ErrorCode.WORKER_EXTERNALLY_MANAGED: CodeDoc(
        {"hive": 409}, "The worker is managed outside the hive (e.g. systemd); change the placements instead."),
    ErrorCode.WORKER_FAILED: CodeDoc(
        {"queen": 502}, "A streamed request's worker failed after the first token: the stream's last error chunk."),
    ErrorCode.WORKER_LOADING: CodeDoc(
        {"worker": 503}, "The worker is still loading its model (`Retry-After: 1`); the queen tries another worker."),
    ErrorCode.WORKER_NOT_FOUND: CodeDoc(
        {"hive": 404}, "The hive knows no worker with this id."),
    ErrorCode.WORKER_SPAWN_FAILED: CodeDoc(
        {"hive": 500, "queen": 502},
        "The hive could not start the worker process (hive), or the worker it started for the request exited "
        "before it was ready (queen; details `last_error` hold the end of the worker's log)."),
    ErrorCode.WORKER_START_TIMEOUT: CodeDoc(
        {"queen": 504}, "A worker started for the request was not ready within `loading_timeout_s`."),
    ErrorCode.WORKER_TIMEOUT: CodeDoc(
        {"queen": 504},
        "The worker sent nothing for `request_timeout_s` (before the first token; after it: an error chunk)."),
}

_BEGIN = "<!-- error codes: generated from rbee_runtime/common/error_codes.py, do not edit -->"
_END = "<!-- end of error codes -->"


def markdown_table() -> str:
    """The error-code table of ``docs/api.md``, between its two marker comments."""
    rows = [f"| `{code}` | {DOCS[code].answered_by()} | {DOCS[code].meaning} |" for code in ErrorCode]
    return "\n".join([_BEGIN, "", "| code | answered by (HTTP status) | meaning |", "|---|---|---|", *rows, "", _END])


def documented_table(text: str) -> str | None:
    """The generated table as ``text`` (docs/api.md) holds it; None without the markers."""
    begin, end = text.find(_BEGIN), text.find(_END)
    if begin < 0 or end < begin:
        return None
    return text[begin : end + len(_END)]


def write_table(path: Path) -> bool:
    """Rewrite the table in ``path`` (between its markers); True when it changed."""
    text = path.read_text()
    old = documented_table(text)
    if old is None:
        raise SystemExit(f"{path}: no {_BEGIN!r} ... {_END!r} section")
    new = text.replace(old, markdown_table())
    path.write_text(new)
    return new != text


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["docs/api.md"]:
        print(f"{arg}: {'updated' if write_table(Path(arg)) else 'up to date'}")
