"""The hive's workers, as one object for the routes: its own and external ones, re-adopted and watched.

A thin facade over :class:`~rbee_runtime.hive.managed_workers.ManagedWorkers` (workers the
hive starts, restarts and stops) and :class:`~rbee_runtime.hive.external_workers.ExternalWorkers`
(workers that announce themselves, e.g. systemd units, which it only watches). At start it
re-adopts both kinds from the worker table and spawns what the config's placements lack; then
it routes ready callbacks and stop requests to the right kind and runs the one loop that
watches them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo, WorkerReady
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.tasks import cancel_and_wait
from rbee_runtime.hive.external_workers import ExternalWorkers
from rbee_runtime.hive.managed_workers import ManagedWorkers
from rbee_runtime.hive.parts import HiveParts, HiveRoom
from rbee_runtime.hive.worker_table import ExternalRecord, parse_record

log = logging.getLogger("rbee.hive.supervisor")

TICK_S = 0.2


class Supervisor(HiveRoom):
    """Starts and watches the workers of this hive (``managed``) and watches the external ones (``external``)."""

    def __init__(
        self, parts: HiveParts, backends: list[str], on_registered: Callable[[], None] | None = None
    ) -> None:
        super().__init__(parts)
        #: ``on_registered``: called when a worker joins without a state change (an external worker): beat at once.
        self.external = ExternalWorkers(parts, on_registered)
        self.managed = ManagedWorkers(parts, backends, other_ports=self.external.ports)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Re-adopt surviving workers, start the placements, then watch."""
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        await self._readopt()
        await self._start_placements()
        self._task = asyncio.create_task(self._monitor(), name="hive-supervisor")

    async def close(self) -> None:
        """Stop watching and stop every worker this hive runs (external workers keep running)."""
        self.managed.closing = True
        await cancel_and_wait(self._task)
        await self.managed.stop_all()
        self.managed.cancel_background()

    async def _start_placements(self) -> None:
        """Spawn the workers the config's placements still lack."""
        for placement in self.config.placements:
            for _ in range(placement.replicas - self.managed.placed(placement.model_id)):
                try:
                    await self.spawn(
                        SpawnRequest(model_id=placement.model_id, slots=placement.slots), placement.model_id
                    )
                except ApiError as exc:
                    log.error("placement %s: cannot start a worker: %s", placement.model_id, exc.message)

    async def _readopt(self) -> None:
        for row in self.table.load():
            record = parse_record(row.record)
            if record is None:
                log.warning("dropping unreadable worker record %s", row.worker_id)
                self.table.delete(row.worker_id)
            elif isinstance(record, ExternalRecord):
                await self.external.readopt(record)
            else:
                await self.managed.readopt(record)

    # ------------------------------------------------------------------ the routes' operations

    async def spawn(self, req: SpawnRequest, placement: str | None = None) -> WorkerInfo:
        """Start a worker for ``req.model_id`` after the checks; answers with state ``loading``."""
        return await self.managed.spawn(req, placement)

    def ready(self, msg: WorkerReady) -> WorkerInfo:
        """A worker's ready callback: ``loading → idle`` for the hive's own workers.

        An external worker is registered (unknown id) or refreshed (known id; a crashed one is
        ``idle`` again). An unknown id that is not external is 404 ``WORKER_NOT_FOUND``.
        """
        wid = msg.worker_id
        if wid in self.external or (wid not in self.managed and msg.managed_by == "external"):
            return self.external.announce(msg)
        return self.managed.ready(wid, msg.slots_total)

    async def stop(self, worker_id: str, reason: str = "requested") -> None:
        """Stop a worker gracefully (``/v1/shutdown``, SIGTERM, then SIGKILL after the grace period).

        An external worker is refused: 409 ``WORKER_EXTERNALLY_MANAGED``.
        """
        self.registry.require(worker_id)
        if worker_id in self.external:
            raise self.external.stop_refused(worker_id)
        await self.managed.stop(worker_id, reason)

    async def stop_all(self) -> None:
        await self.managed.stop_all()

    # ------------------------------------------------------------------ watching

    async def _monitor(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor tick failed")
            await asyncio.sleep(TICK_S)

    async def _tick(self) -> None:
        now = time.time()
        checks = await self.managed.sweep(now)
        checks += self.external.sweep(now)
        if checks:
            await asyncio.gather(*checks)
