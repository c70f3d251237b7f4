"""The hive as one object: catalog + registry + supervisor + heartbeats, started and stopped together."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os

from rbee_runtime import __version__
from rbee_runtime.common.contracts import Heartbeat, HiveCapabilities, RegisterModelRequest
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.catalog import Catalog
from rbee_runtime.hive.config import HiveConfig
from rbee_runtime.hive.heartbeat import HeartbeatSender
from rbee_runtime.hive.registry import WorkerRegistry
from rbee_runtime.hive.resources import detect_backends, detect_gpus, probe_resources
from rbee_runtime.hive.supervisor import Supervisor
from rbee_runtime.hive.worker_client import WorkerClient

log = logging.getLogger("rbee.hive")


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
        self.catalog = Catalog(config.catalog_path)
        self.registry = WorkerRegistry()
        self.client = WorkerClient()
        gpus = detect_gpus()
        self.backends = detect_backends(gpus)
        if config.backend not in self.backends:
            log.warning(
                "configured backend %r was not detected here (detected: %s); workers will be asked to use it anyway",
                config.backend,
                ", ".join(self.backends),
            )
        self.supervisor = Supervisor(
            config, self.catalog, self.registry, self.client, self.backends, on_registered=self.catalog_changed
        )
        self.heartbeat: HeartbeatSender | None = None
        if config.queen_url:
            self.heartbeat = HeartbeatSender(
                config.queen_url, config.heartbeat_interval_s, self.build_heartbeat, api_key=config.queen_api_key
            )
            self.registry.subscribe(self.heartbeat.on_worker_change)

    async def start(self) -> None:
        """Register the configured models, re-adopt workers, start placements and loops."""
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

    def _register_configured_models(self) -> None:
        for model in self.config.models:
            req = RegisterModelRequest(
                model_id=model.model_id, reference=model.reference, local_path=model.local_path, sha256=model.sha256
            )
            try:
                self.catalog.register(req)
            except ApiError as exc:
                log.error("model %s from the config was not registered: %s", model.model_id, exc.message)

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

    def catalog_changed(self) -> None:
        """Beat at once (the catalog changed, or a worker joined without a state change)."""
        if self.heartbeat is not None:
            self.heartbeat.wake()
