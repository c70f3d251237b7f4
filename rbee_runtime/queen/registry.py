"""Hives and workers as the queen learns them from heartbeats.

A hive is ``online`` while its heartbeats arrive, ``stale`` after ``stale_timeout_s`` without one
(its workers are never routed to) and dropped after twice that. The workers of a hive are the
ones its last heartbeat listed: a worker missing from a heartbeat is removed. A worker id belongs
to one hive: a heartbeat listing an id that another *online* hive reports as a live worker
(``loading``/``idle``/``busy``/``draining``) is taken without that worker, which is reported as
rejected (``WORKER_ALREADY_REGISTERED``); once the owner is stale or its worker is gone, the id moves.
A hive is deregistered (``deregister``: a deploy pruned its host, after stopping it) at once, with its workers;
the queen remembers that it did, so a heartbeat of that hive afterwards, which registers it again, is reported
(``HeartbeatOutcome.returned``) instead of passing unnoticed.
All methods are thread safe (one lock, no I/O under it) and therefore also safe between asyncio tasks.
The per-request queries (:meth:`Registry.routable_workers`, :meth:`Registry.knows_model`,
:meth:`Registry.peer_at`) read an index by model and by peer origin, rebuilt when a heartbeat changes the
cluster (not on each request), so routing one request never scans the workers of other models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import httpx

from rbee_runtime.common.contracts import Heartbeat, WorkerInfo, WorkerState

Clock = Callable[[], float]


def peer_origin(url: str) -> str:
    """``scheme://host:port`` of a peer's URL ("" when it is not one)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return ""
    return f"{parsed.scheme}://{parsed.host.lower()}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
PresenceStatus = Literal["online", "stale"]

ROUTABLE_STATES = frozenset({WorkerState.IDLE, WorkerState.BUSY})
ACTIVE_STATES = frozenset({WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY})
#: States in which a worker holds its id: another hive cannot report a worker with that id meanwhile.
CLAIMING_STATES = frozenset({*ACTIVE_STATES, WorkerState.DRAINING})
_MAX_DEREGISTERED = 1024


@dataclass(frozen=True)
class Rejection:
    """A worker of a heartbeat that was not taken: ``owner_hive_id`` reports a live worker with its id."""

    worker_id: str
    owner_hive_id: str


@dataclass(frozen=True)
class HeartbeatOutcome:
    """What one heartbeat changed: workers of the hive that vanished, workers refused, and whether the hive was
    deregistered before (``returned``: it registers again)."""

    removed: list[str]
    rejected: list[Rejection]
    returned: bool = False


@dataclass(frozen=True)
class HiveSnapshot:
    """A hive at one instant: its last heartbeat, status and age of that heartbeat."""

    heartbeat: Heartbeat
    status: PresenceStatus
    age_s: float

    @property
    def active_workers(self) -> int:
        """Workers of this hive that hold (or will hold) a model in memory."""
        return sum(1 for w in self.heartbeat.workers if w.state in ACTIVE_STATES)


@dataclass(frozen=True)
class WorkerSnapshot:
    """A worker at one instant, with the status of the hive that reported it."""

    info: WorkerInfo
    status: PresenceStatus
    quarantined: bool

    @property
    def routable(self) -> bool:
        """True when requests may be sent to it."""
        return self.status == "online" and not self.quarantined and self.info.state in ROUTABLE_STATES


@dataclass
class _Hive:
    heartbeat: Heartbeat
    last_seen: float
    workers: dict[str, WorkerInfo]


@dataclass
class _Index:
    """What the per-request queries read: workers by model, the models heard of, the peers by origin."""

    by_model: dict[str, list[tuple[_Hive, WorkerInfo]]]
    models: frozenset[str]
    peers: dict[str, tuple[str, Literal["hive", "worker"]]]


def _build_index(hives: dict[str, _Hive]) -> _Index:
    by_model: dict[str, list[tuple[_Hive, WorkerInfo]]] = {}
    models: set[str] = set()
    peers: dict[str, tuple[str, Literal["hive", "worker"]]] = {}
    for hive_id, hive in hives.items():
        models.update(hive.heartbeat.models)
        peers.setdefault(peer_origin(hive.heartbeat.url), (hive_id, "hive"))
        for worker in hive.workers.values():
            by_model.setdefault(worker.model_id, []).append((hive, worker))
            models.add(worker.model_id)
            peers.setdefault(peer_origin(worker.url), (hive_id, "worker"))
    for entries in by_model.values():
        entries.sort(key=lambda entry: entry[1].worker_id)
    peers.pop("", None)
    return _Index(by_model, frozenset(models), peers)


class Registry:
    """The queen's view of the cluster, fed by ``POST /v1/hives/heartbeat``."""

    def __init__(self, stale_timeout_s: float, clock: Clock = time.monotonic) -> None:
        self.stale_timeout_s = stale_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._hives: dict[str, _Hive] = {}
        self._quarantine: dict[str, float] = {}
        self._index: _Index | None = None
        self._deregistered: dict[str, None] = {}  # an ordered set: the oldest go first past _MAX_DEREGISTERED

    def _indexed(self) -> _Index:
        """The index of the current hives (rebuilt after a change; call under the lock)."""
        if self._index is None:
            self._index = _build_index(self._hives)
        return self._index

    # ------------------------------------------------------------------ updates

    def apply_heartbeat(self, heartbeat: Heartbeat) -> list[str]:
        """Record a hive's heartbeat; return the ids of its workers that vanished from it."""
        return self.record_heartbeat(heartbeat).removed

    def record_heartbeat(self, heartbeat: Heartbeat) -> HeartbeatOutcome:
        """Record a hive's heartbeat: the workers that vanished from it, and those refused.

        A worker whose id another online hive reports as live is left out (``rejected``); the id of a
        worker of a stale hive, or of one that is crashed or stopped, moves to this hive.
        """
        now = self._clock()
        with self._lock:
            old = self._hives.get(heartbeat.hive_id)
            owners = {
                worker_id: hive_id
                for hive_id, hive in self._hives.items()
                if hive_id != heartbeat.hive_id
                for worker_id in hive.workers
            }
            workers: dict[str, WorkerInfo] = {}
            rejected: list[Rejection] = []
            for info in heartbeat.workers:
                owner_id = owners.get(info.worker_id)
                if owner_id is not None:
                    owner = self._hives[owner_id]
                    held = owner.workers[info.worker_id]
                    if self._status(owner, now) == "online" and held.state in CLAIMING_STATES:
                        rejected.append(Rejection(info.worker_id, owner_id))
                        continue
                    del owner.workers[info.worker_id]  # the stale or dead owner's record gives way
                workers[info.worker_id] = info
            removed = sorted(set(old.workers) - set(workers)) if old else []
            for worker_id in removed:
                self._quarantine.pop(worker_id, None)
            if rejected:
                heartbeat = heartbeat.model_copy(update={"workers": list(workers.values())})
            self._hives[heartbeat.hive_id] = _Hive(heartbeat=heartbeat, last_seen=now, workers=workers)
            self._index = None
            returned = heartbeat.hive_id in self._deregistered
            self._deregistered.pop(heartbeat.hive_id, None)
            return HeartbeatOutcome(removed=removed, rejected=rejected, returned=returned)

    def deregister(self, hive_id: str) -> list[str] | None:
        """Forget hive ``hive_id`` and its workers now; their ids (None: the queen did not know the hive).

        Only for a hive that no longer heartbeats (its host was pruned, the hive stopped first): a later heartbeat
        registers it again, and that heartbeat's outcome says so (``returned``).
        """
        with self._lock:
            hive = self._hives.pop(hive_id, None)
            if hive is None:
                return None
            for worker_id in hive.workers:
                self._quarantine.pop(worker_id, None)
            self._deregistered[hive_id] = None
            while len(self._deregistered) > _MAX_DEREGISTERED:
                self._deregistered.pop(next(iter(self._deregistered)))
            self._index = None
            return sorted(hive.workers)

    def upsert_worker(self, info: WorkerInfo) -> bool:
        """Add or update one worker of a known hive (from polling the hive); False if the hive is unknown."""
        with self._lock:
            hive = self._hives.get(info.hive_id)
            if hive is None:
                return False
            hive.workers[info.worker_id] = info
            self._index = None
            return True

    def quarantine(self, worker_id: str, seconds: float) -> None:
        """Route nothing to a worker that failed for ``seconds`` (a new heartbeat does not lift it)."""
        with self._lock:
            self._quarantine[worker_id] = self._clock() + seconds

    def prune(self) -> list[str]:
        """Drop the hives silent for twice the stale timeout; return their ids."""
        now = self._clock()
        with self._lock:
            return self._prune_locked(now)

    def _prune_locked(self, now: float) -> list[str]:
        dropped = [hid for hid, h in self._hives.items() if now - h.last_seen > 2 * self.stale_timeout_s]
        for hive_id in dropped:
            for worker_id in self._hives.pop(hive_id).workers:
                self._quarantine.pop(worker_id, None)
            self._index = None
        for worker_id, until in list(self._quarantine.items()):
            if until <= now:
                del self._quarantine[worker_id]
        return dropped

    # ------------------------------------------------------------------ queries

    def _status(self, hive: _Hive, now: float) -> PresenceStatus:
        return "online" if now - hive.last_seen <= self.stale_timeout_s else "stale"

    def hives(self) -> list[HiveSnapshot]:
        """Every hive not yet dropped, sorted by id."""
        now = self._clock()
        with self._lock:
            self._prune_locked(now)
            return [
                HiveSnapshot(
                    heartbeat=h.heartbeat.model_copy(update={"workers": list(h.workers.values())}),
                    status=self._status(h, now),
                    age_s=max(0.0, now - h.last_seen),
                )
                for _, h in sorted(self._hives.items())
            ]

    def workers(self, model_id: str | None = None) -> list[WorkerSnapshot]:
        """Every known worker (optionally of one model), sorted by id."""
        now = self._clock()
        with self._lock:
            self._prune_locked(now)
            out = [
                WorkerSnapshot(info=w, status=self._status(h, now), quarantined=w.worker_id in self._quarantine)
                for h in self._hives.values()
                for w in h.workers.values()
                if model_id is None or w.model_id == model_id
            ]
        return sorted(out, key=lambda s: s.info.worker_id)

    def worker(self, worker_id: str) -> WorkerSnapshot | None:
        """One worker by id."""
        return next((w for w in self.workers() if w.info.worker_id == worker_id), None)

    def routable_workers(self, model_id: str, exclude: Iterable[str] = ()) -> list[WorkerInfo]:
        """Workers of ``model_id`` that may take requests now (online, idle/busy, not quarantined), by id."""
        skip = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        now = self._clock()
        with self._lock:
            self._prune_locked(now)
            return [
                worker
                for hive, worker in self._indexed().by_model.get(model_id, ())
                if worker.state in ROUTABLE_STATES
                and worker.worker_id not in self._quarantine
                and worker.worker_id not in skip
                and self._status(hive, now) == "online"
            ]

    def loading_workers(self, model_id: str) -> list[WorkerInfo]:
        """Workers of ``model_id`` on online hives that are still loading their model."""
        return [
            s.info
            for s in self.workers(model_id)
            if s.status == "online" and s.info.state == WorkerState.LOADING and not s.quarantined
        ]

    def spawn_candidates(self, model_id: str) -> list[HiveSnapshot]:
        """Online hives whose catalog holds ``model_id``, the most free capacity first."""
        hives = [h for h in self.hives() if h.status == "online" and model_id in h.heartbeat.models]
        return sorted(
            hives,
            key=lambda h: (
                -(h.heartbeat.max_workers - h.active_workers),
                -h.heartbeat.resources.ram_available_bytes,
                h.heartbeat.hive_id,
            ),
        )

    def peer_at(self, origin: str) -> tuple[str, Literal["hive", "worker"]] | None:
        """Whose API lives at ``origin`` (``scheme://host:port``): ``(hive_id, "hive" | "worker")``, or None."""
        with self._lock:
            return self._indexed().peers.get(origin) if origin else None

    def models(self) -> list[str]:
        """Models that can be served: in an online hive's catalog or run by an online worker."""
        names: set[str] = set()
        for h in self.hives():
            if h.status == "online":
                names.update(h.heartbeat.models)
                names.update(w.model_id for w in h.heartbeat.workers if w.state in ACTIVE_STATES)
        return sorted(names)

    def knows_model(self, model_id: str) -> bool:
        """True when any hive (online or stale) has heard of ``model_id``."""
        now = self._clock()
        with self._lock:
            self._prune_locked(now)
            return model_id in self._indexed().models
