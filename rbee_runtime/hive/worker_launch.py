"""What a new worker process of the hive is, decided before it starts.

The checks of a spawn (backend, device, ``max_workers``, the model file, RAM), the spec of
the worker, a free port of the hive's worker range, the command line and the first
``WorkerInfo`` (``loading``). Pure decisions on the hive config: no process is touched here.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from rbee_runtime.common.contracts import CatalogEntry, SpawnRequest, WorkerInfo, WorkerState
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.config import HiveConfig, worker_url
from rbee_runtime.hive.resources import check_ram
from rbee_runtime.hive.worker_table import WorkerSpec


def choose_backend_and_device(config: HiveConfig, backends: list[str], req: SpawnRequest) -> tuple[str, int]:
    """The backend and device of a spawn: the request's, else the hive's (400 when not available here)."""
    backend = req.backend or config.backend
    if backend != config.backend and backend not in backends:
        available = sorted({config.backend, *backends})
        raise ApiError(
            400,
            ErrorCode.BACKEND_UNAVAILABLE,
            f"Backend {backend!r} is not available on hive {config.hive_id!r}; available: "
            f"{', '.join(available)}. (Metal is only available on macOS.)",
            {"backend": backend, "available": available},
        )
    device = req.device if req.device is not None else (config.devices[0] if config.devices else 0)
    if backend != "cpu" and config.devices and device not in config.devices:
        options = " or ".join(f"device {d}" for d in config.devices)
        raise ApiError(
            400,
            ErrorCode.DEVICE_UNAVAILABLE,
            f"Device {device} is not available on hive {config.hive_id!r}. Try {options}.",
            {"device": device, "devices": config.devices},
        )
    return backend, device


def check_capacity(config: HiveConfig, live: int) -> None:
    """409 ``MAX_WORKERS`` when ``live`` workers of the hive already fill ``max_workers``."""
    if live >= config.max_workers:
        raise ApiError(
            409,
            ErrorCode.MAX_WORKERS,
            f"Hive {config.hive_id!r} already runs {live} workers (max_workers = "
            f"{config.max_workers}). Stop one (DELETE /v1/workers/<id>) or raise max_workers.",
            {"max_workers": config.max_workers, "workers": live},
        )


def check_model_and_ram(
    config: HiveConfig, model_id: str, path: Path, size_bytes: int, pending_bytes: int, kv_bytes: int = 0,
    kv_for: str = "",
) -> None:  # fmt: skip
    """The model file is still there and fits in RAM, with ``kv_bytes`` of KV caches, next to ``pending_bytes``."""
    if not path.is_file():
        raise ApiError(
            400,
            ErrorCode.MODEL_FILE_MISSING,
            f"Model file {str(path)!r} of {model_id!r} is no longer on this hive; copy it back and "
            "register it again (POST /v1/models).",
            {"model_id": model_id, "local_path": str(path)},
        )
    check_ram(model_id, size_bytes, config.ram_reserve_bytes, pending_bytes=pending_bytes, kv_bytes=kv_bytes,
              kv_for=kv_for)  # fmt: skip


def new_spec(
    config: HiveConfig, entry: CatalogEntry, req: SpawnRequest, backend: str, device: int, placement: str | None
) -> WorkerSpec:
    """The spec of a new worker (a fresh id, its log in ``<data_dir>/logs/<worker_id>.log``)."""
    worker_id = f"worker-{uuid.uuid4().hex[:12]}"
    return WorkerSpec(
        worker_id=worker_id,
        model_id=entry.model_id,
        model_path=entry.local_path,
        model_size_bytes=entry.size_bytes,
        slots=req.slots or config.default_slots,
        ctx_size=req.ctx_size or config.ctx_size,
        backend=backend,
        device=device,
        n_gpu_layers=req.n_gpu_layers if backend != "cpu" else None,
        placement=placement,
        log_path=str(config.logs_dir / f"{worker_id}.log"),
        embedding=config.is_embedding(entry.model_id),
    )


def pick_port(config: HiveConfig, taken: set[int]) -> int:
    """The first port of the worker range not in ``taken`` that can be bound (503 ``NO_FREE_PORT``)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    for port in range(config.worker_port_first, config.worker_port_last + 1):
        if port in taken:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((config.host, port))
            except OSError:
                continue
        return port
    raise ApiError(
        503,
        ErrorCode.NO_FREE_PORT,
        f"No free worker port in {config.worker_port_first}-{config.worker_port_last} on hive "
        f"{config.hive_id!r}; widen worker_port_first/worker_port_last or stop a worker.",
        {"first": config.worker_port_first, "last": config.worker_port_last},
    )


def worker_command(config: HiveConfig, spec: WorkerSpec, port: int) -> list[str]:
    """The command line of the worker process."""
    cmd = [
        *config.worker_command,
        "--worker-id", spec.worker_id,
        "--model-id", spec.model_id,
        "--model-path", spec.model_path,
        "--host", config.host,
        "--port", str(port),
        "--slots", str(spec.slots),
        "--ctx-size", str(spec.ctx_size),
        "--backend", spec.backend,
        "--device", str(spec.device),
        "--callback-url", f"{config.local_url}/v1/workers/ready",
        "--announce-interval", "0",  # the hive re-adopts its own workers; one callback is enough
    ]  # fmt: skip
    if config.worker_threads:
        cmd += ["--threads", str(config.worker_threads)]
    if spec.embedding:
        cmd += ["--embedding"]
    if spec.n_gpu_layers is not None:
        cmd += ["--n-gpu-layers", str(spec.n_gpu_layers)]
    if config.credential is not None:  # a path, never the credential itself: argv is world-readable
        cmd += ["--credential-file", str(config.worker_credential_file)]
    if config.tls is not None:  # the hive's own certificate: its workers serve on the same host
        tls = config.tls
        cmd += ["--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file)]
        cmd += ["--tls-ca-file", str(tls.ca_file)]
    return cmd


def spawn_failed(cmd: list[str], exc: OSError) -> ApiError:
    """500 ``WORKER_SPAWN_FAILED``: the worker command could not be started."""
    return ApiError(
        500,
        ErrorCode.WORKER_SPAWN_FAILED,
        f"Could not start the worker command {cmd[0]!r}: {exc}. Check worker_command in the hive config.",
        {"command": cmd[0]},
    )


def loading_info(
    config: HiveConfig, spec: WorkerSpec, port: int, pid: int | None, now: float, restarts: int, last_error: str | None
) -> WorkerInfo:
    """The ``WorkerInfo`` of a just-started worker process (state ``loading``)."""
    return WorkerInfo(
        worker_id=spec.worker_id,
        hive_id=config.hive_id,
        model_id=spec.model_id,
        url=worker_url(config.public_host, port, config.tls is not None),
        state=WorkerState.LOADING,
        backend=spec.backend,
        device=spec.device,
        slots_total=spec.slots,
        pid=pid,
        started_at=now,
        last_activity=now,
        restarts=restarts,
        last_error=last_error,
    )
