"""The hive as one object: catalog + worker table + registry + supervisor + heartbeats, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from rbee_runtime import __version__
from rbee_runtime.common.contracts import (
    Heartbeat,
    HiveCapabilities,
    RegisterModelRequest,
    SpawnRequest,
    WorkerReady,
    WorkerState,
)
from rbee_runtime.common.credentials import worker_credential, write_credential
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.internal_auth import InternalAuth
from rbee_runtime.common.notified_server import starting_longer
from rbee_runtime.common.offload import OffloadPlan, plan_offload, try_read_gguf_shape
from rbee_runtime.common.sd_notify import notifier
from rbee_runtime.hive.catalog import Catalog
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.heartbeat import HeartbeatSender
from rbee_runtime.hive.parts import HiveParts
from rbee_runtime.hive.registry import WorkerRegistry
from rbee_runtime.hive.resources import (
    check_gpu_temperature,
    check_vram,
    choose_gpu,
    detect_backends,
    detect_gpus,
    probe_resources,
    required_vram,
)
from rbee_runtime.hive.supervisor import Supervisor
from rbee_runtime.hive.worker_client import WorkerClient
from rbee_runtime.hive.worker_table import WorkerTable

log = logging.getLogger("rbee.hive")

#: States in which a worker id is held by its registration: a second claim of the id is refused.
CLAIMED_STATES = frozenset({WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY})


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


class DataDirInUseError(RuntimeError):
    """Another hive process already runs on this ``data_dir``."""


def _lock_data_dir(config: HiveConfig) -> int:
    """Hold ``<data_dir>/hive.lock`` for the life of this process (two hives would fight over workers)."""
    path = config.data_dir / "hive.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirInUseError(
            f"another hive (pid {holder}) already uses data_dir {config.data_dir}; stop it first "
            "or give this hive its own data_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


class Hive:
    """Owns the hive's parts; the HTTP routes call into it."""

    def __init__(self, config: HiveConfig) -> None:
        self.config = config
        self.version = __version__
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_data_dir(config)
        self.catalog = Catalog(
            config.catalog_path, rebuild_from_disk=True, known_models=self._configured_model_requests
        )
        self.worker_table = WorkerTable(self.catalog.db)
        self.registry = WorkerRegistry()
        self.internal_auth = InternalAuth()
        self.worker_credential: str | None = None
        if config.credential is not None:
            self.worker_credential = worker_credential(config.credential)
            self.internal_auth = InternalAuth({"hive": config.credential, "worker": self.worker_credential})
            write_credential(config.worker_credential_file, self.worker_credential)  # for the workers it starts
        self.client = WorkerClient(credential=self.worker_credential, tls=config.tls)
        gpus = detect_gpus()
        self.backends = detect_backends(gpus)
        if config.backend not in self.backends:
            log.warning(
                "configured backend %r was not detected here (detected: %s); workers will be asked to use it anyway",
                config.backend,
                ", ".join(self.backends),
            )
        parts = HiveParts(config, self.catalog, self.worker_table, self.registry, self.client)
        self.supervisor = Supervisor(parts, self.backends, on_registered=self.catalog_changed)
        self.heartbeat: HeartbeatSender | None = None
        if config.queen_url:
            self.heartbeat = HeartbeatSender(
                config.queen_url, config.heartbeat_interval_s, self.build_heartbeat, credential=config.credential,
                tls=config.tls,
            )  # fmt: skip
            self.registry.subscribe(self.heartbeat.on_worker_change)

    async def start(self) -> None:
        """Register the configured models, re-adopt workers, start placements and loops."""
        models = len(self.config.models)
        # A model new to the catalog has its sha256 checked (minutes for a big one): systemd waits for it.
        async with starting_longer(notifier(), f"registering {models} model(s) (checking checksums)"):
            await asyncio.to_thread(self._register_configured_models)
        await self.supervisor.start()
        if self.heartbeat is not None:
            self.heartbeat.start()
        log.info(
            "hive %s ready at %s (backends %s, %d model(s), %d worker(s))",
            self.config.hive_id,
            self.config.url,
            ", ".join(self.backends),
            len(self.catalog.model_ids()),
            len(self.registry.list()),
        )

    async def stop(self) -> None:
        """Stop every worker, tell the queen, release resources."""
        log.info("hive %s shutting down", self.config.hive_id)
        await self.supervisor.close()
        if self.heartbeat is not None:
            await self.heartbeat.close(final=True)
        await self.client.aclose()
        self.catalog.close()
        os.close(self._lock_fd)

    def status_line(self) -> str:
        """What ``systemctl status rbee-hive`` shows: where it listens, its workers, whether the queen hears it."""
        workers = self.registry.list()
        ready = sum(1 for w in workers if w.state in (WorkerState.IDLE, WorkerState.BUSY))
        counts = [f"{ready} worker(s) ready"] + [
            f"{n} {state}" for state in (WorkerState.LOADING, WorkerState.CRASHED)
            if (n := sum(1 for w in workers if w.state == state))
        ]  # fmt: skip
        line = f"listening on {self.config.url}; {', '.join(counts)}"
        beat = self.heartbeat
        if beat is None:
            return f"{line}; no queen configured"
        if beat.failing_since is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(beat.failing_since))
            return f"{line}; queen unreachable since {since}: {beat.problem}"
        return f"{line}; heartbeats reach the queen"

    async def first_heartbeat_tried(self, timeout_s: float = 30.0) -> bool:
        """Wait until the first heartbeat to the queen was tried (taken or not; True at once without a queen)."""
        if self.heartbeat is not None:
            with contextlib.suppress(TimeoutError):  # its POST times out sooner: a stuck build must not hold READY
                await asyncio.wait_for(self.heartbeat.first_tried.wait(), timeout_s)
        return True

    def _configured_model_requests(self) -> list[RegisterModelRequest]:
        return [
            RegisterModelRequest(model_id=m.model_id, reference=m.reference, local_path=m.local_path, sha256=m.sha256)
            for m in self.config.models
        ]

    def _register_configured_models(self) -> None:
        """Register the config's models; forget the others whose file is gone (a deploy that no longer places a
        model here deletes its file before the hive restarts: the model is then no longer advertised)."""
        configured = set()
        for req in self._configured_model_requests():
            configured.add(req.model_id)
            try:
                self.catalog.register(req)
            except ApiError as exc:
                log.error("model %s from the config was not registered: %s", req.model_id, exc.message)
        for entry in self.catalog.list_models():
            if entry.model_id not in configured and not Path(entry.local_path).is_file():
                self.catalog.remove(entry.model_id)
                log.info("model %s forgotten: its file %s is gone", entry.model_id, entry.local_path)

    def capabilities(self) -> HiveCapabilities:
        return HiveCapabilities(
            hive_id=self.config.hive_id,
            version=self.version,
            backends=self.backends,
            resources=probe_resources(self.config.data_dir),
        )

    async def build_heartbeat(self) -> Heartbeat:
        resources = await asyncio.to_thread(probe_resources, self.config.data_dir)
        return Heartbeat(
            hive_id=self.config.hive_id,
            url=self.config.url,
            version=self.version,
            backends=self.backends,
            resources=resources,
            models=self.catalog.model_ids(),
            workers=self.registry.list(),
            max_workers=self.config.max_workers,
        )

    def check_ready_claim(self, msg: WorkerReady) -> None:
        """Refuse (409 ``WORKER_ALREADY_REGISTERED``) a ready callback that claims another live worker's id.

        A worker id belongs to one registration while that worker is ``loading``, ``idle`` or ``busy``:
        an announce with the same id from another endpoint (another port for the hive's own workers,
        another URL for external ones) or another owner (``managed_by``) is refused. Re-announces of the
        same endpoint are accepted, and so is any announce once the registered worker is crashed,
        draining or gone (e.g. systemd restarted it elsewhere).
        """
        info = self.registry.get(msg.worker_id)
        if info is None or info.state not in CLAIMED_STATES:
            return
        if info.managed_by != msg.managed_by:
            same = False
        elif info.managed_by == "hive":
            same = _port(msg.url) == _port(info.url)
        else:
            same = msg.url.rstrip("/") == info.url.rstrip("/")
        if same:
            return
        log.warning(
            "refused the ready callback of %s from %s (%s): the id is registered to the %s worker at %s (%s)",
            msg.worker_id,
            msg.url,
            msg.managed_by,
            info.state.value,
            info.url,
            info.managed_by,
        )
        raise ApiError(
            409,
            ErrorCode.WORKER_ALREADY_REGISTERED,
            f"Worker id {msg.worker_id!r} is already registered on hive {self.config.hive_id!r} to the "
            f"{info.state.value} worker at {info.url} (managed by {info.managed_by}); {msg.url} cannot take it "
            "over while that worker runs. Give every worker its own --worker-id (e.g. the systemd instance "
            "name), or stop the other worker first.",
            {
                "worker_id": msg.worker_id,
                "registered_url": info.url,
                "registered_state": info.state.value,
                "registered_managed_by": info.managed_by,
                "announced_url": msg.url,
                "announced_managed_by": msg.managed_by,
            },
        )

    def gpu_preflight(self, req: SpawnRequest) -> SpawnRequest:
        """GPU checks of a CUDA spawn against the GPUs now (less the VRAM loading workers will take), and its offload.

        Without a device in the request, the allowed GPU (``devices`` of the config, else any) with the most
        free VRAM that is not over ``gpu_max_temperature_c`` is chosen. 503 ``GPU_TOO_HOT`` when the GPU (or
        every GPU the model fits on) is too hot, 400 ``DEVICE_UNAVAILABLE`` for a device that is not there.
        The number of layers to offload (``n_gpu_layers``) is decided by :func:`plan_offload` on the chosen
        GPU: all when the model fits; with ``gpu_partial_offload`` as many as fit (507 ``VRAM_EXHAUSTED`` when
        not one does), else 507 ``VRAM_EXHAUSTED`` when the whole model does not fit. Nothing is checked
        without NVIDIA GPUs (the spawn checks the backend; the worker decides its offload).
        """
        if (req.backend or self.config.backend) != "cuda":
            return req
        entry = self.catalog.get(req.model_id)
        gpus = detect_gpus()
        if entry is None or not gpus:
            return req
        pending: dict[int, int] = {}
        for w in self.registry.list():
            if w.state == WorkerState.LOADING and w.backend == "cuda":
                loading = self.catalog.get(w.model_id)
                if loading is not None:
                    pending[w.device] = pending.get(w.device, 0) + required_vram(loading.size_bytes)
        limit = self.config.gpu_max_temperature_c
        try:
            if req.device is None:
                gpu = choose_gpu(
                    entry.size_bytes,
                    gpus,
                    allowed=self.config.devices or None,
                    pending=pending,
                    model_id=entry.model_id,
                    max_temperature_c=limit,
                )
            else:
                gpu = check_vram(
                    entry.size_bytes, gpus, req.device, pending=pending, model_id=entry.model_id,
                    max_temperature_c=limit,
                )  # fmt: skip
            refused: ApiError | None = None
        except ApiError as exc:
            if exc.code != ErrorCode.VRAM_EXHAUSTED or not self.config.gpu_partial_offload:
                raise
            refused = exc
            gpu = next(g for g in gpus if g.index == exc.details["device"])
            check_gpu_temperature(gpu, limit, entry.model_id, gpus)
        if req.n_gpu_layers is not None:
            if refused is not None and req.n_gpu_layers == -1:
                raise refused
            return req.model_copy(update={"device": gpu.index})
        shape = try_read_gguf_shape(entry.local_path)
        plan = plan_offload(
            entry.size_bytes,
            shape.layers if shape else None,
            req.ctx_size or self.config.ctx_size,
            max(0, gpu.memory_free_bytes - pending.get(gpu.index, 0)) if gpu.memory_total_bytes else None,
            slots=req.slots or self.config.default_slots,
            n_embd_kv=shape.n_embd_kv if shape else None,
        )
        if refused is not None and plan.n_gpu_layers in (-1, 0):
            raise refused  # the layer count is unknown, or not one layer fits
        if refused is None and plan.n_gpu_layers == 0:  # it fits (model x 1.2) but not next to the full overhead
            plan = OffloadPlan(-1, plan.layers_total, plan.required_bytes, plan.free_bytes, "fits by model size")
        if not self.config.gpu_partial_offload:
            plan = OffloadPlan(-1, plan.layers_total, plan.required_bytes, plan.free_bytes, "partial offload is off")
        log.info("worker of %s on CUDA device %d (%s): %s", entry.model_id, gpu.index, gpu.name, plan.describe())
        return req.model_copy(update={"device": gpu.index, "n_gpu_layers": plan.n_gpu_layers})

    def catalog_changed(self) -> None:
        """Beat at once (the catalog changed, or a worker joined without a state change)."""
        if self.heartbeat is not None:
            self.heartbeat.wake()
