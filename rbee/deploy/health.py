"""The one "cluster is ready" rule, and its one waiter.

Used by the pyinfra health gate (``rbee/deploys/health.py``), the rolling deploy's gate
(``rbee.rollout.gate``), the Ansible health helper (``rbee.deploy.ansible_steps``) and ``rbee up``
(``rbee.local.runner``). An ``Expectation`` says what ready means; ``missing_in`` judges the
queen's hive and worker lists against it (pure); ``missing`` asks the queen (and, when asked
for, each placed worker for a real completion); ``wait_ready`` polls ``missing`` until it is
empty or the time is up; ``cluster_lines`` is the cluster as the gates print it.

Ready: every expected hive is online (and, with ``since``, has sent a heartbeat since then), and
runs at least its number of placed workers (of the expected ``managed_by``) idle or busy; with
``serves``, each of those workers streams a two-token completion (``POST /v1/completions``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from rbee.client import QueenError
from rbee.deploy.cluster_ca import trust
from rbee_runtime.common.contracts import ManagedBy, QueenHive, QueenWorker, WorkerState
from rbee_runtime.common.credentials import hive_credential, worker_credential

READY_STATES = frozenset({WorkerState.IDLE, WorkerState.BUSY})
"""The states in which a placed worker counts as ready."""


class QueenView(Protocol):
    """What the rule reads from the queen (``rbee.client.QueenClient`` is one)."""

    base_url: str

    def hives(self) -> list[QueenHive]: ...

    def workers(self) -> list[QueenWorker]: ...


@dataclass(frozen=True)
class Expectation:
    """What a ready cluster looks like to the queen.

    ``placed``: hive id → number of placed workers it must run; ``managed_by``: which workers count
    (``external``: the systemd units of a deploy; ``hive``: the hive's own placements, ``rbee up``);
    ``since``: wall time each hive must have sent a heartbeat after (None: any heartbeat);
    ``serves``: each placed worker must also complete a real two-token generation (with the credential of
    its hive's workers, derived from ``cluster_secret`` when the cluster has one).
    """

    placed: Mapping[str, int] = field(default_factory=dict)
    managed_by: ManagedBy = "external"
    since: float | None = None
    serves: bool = False
    cluster_secret: str | None = field(default=None, repr=False)

    def worker_token(self, hive_id: str) -> str | None:
        """The credential the workers of ``hive_id`` take (None: an open plane)."""
        if self.cluster_secret is None:
            return None
        return worker_credential(hive_credential(self.cluster_secret, hive_id))

    def placed_workers(self, workers: Sequence[QueenWorker]) -> list[QueenWorker]:
        """The ready workers that count for this expectation, on its hives."""
        return [
            w
            for w in workers
            if w.hive_id in self.placed and w.managed_by == self.managed_by and w.state in READY_STATES
        ]


def missing_in(
    expectation: Expectation, hives: Sequence[QueenHive], workers: Sequence[QueenWorker], now: float | None = None
) -> str:
    """What the queen's lists lack for ``expectation`` ("" when ready), e.g. ``hive h2, 1 placed worker(s) on h3
    (tiny-2 loading)`` (the counted workers it lists there, not ready: state and last error).

    Pure: ``hives``/``workers`` are the queen's ``GET /v1/hives``/``GET /v1/workers``; ``now`` (wall
    time, default: the clock) only matters with ``expectation.since``. Does not check ``serves``.
    """
    online = {h.hive_id: h for h in hives if h.status == "online"}
    problems = [f"hive {h}" for h in sorted(set(expectation.placed) - set(online))]
    if expectation.since is not None:
        waited = (time.time() if now is None else now) - expectation.since
        problems += [
            f"hive {h} has not reported since the deploy (is it running?)"
            for h in sorted(set(expectation.placed) & set(online))
            if online[h].last_heartbeat_age_s > waited
        ]
    ready = Counter(w.hive_id for w in expectation.placed_workers(workers))
    problems += [
        f"{n - ready[h]} placed worker(s) on {h}{_not_ready(expectation, workers, h)}"
        for h, n in sorted(expectation.placed.items())
        if ready[h] < n
    ]
    return ", ".join(problems)


def _not_ready(expectation: Expectation, workers: Sequence[QueenWorker], hive_id: str) -> str:
    """What the queen says of ``hive_id``'s counted workers that are not ready, e.g. `` (tiny-2 crashed: OOM)``
    ("" when it lists none of them)."""
    seen = [
        f"{w.worker_id} {w.state}" + (f": {w.last_error[:120]}" if w.last_error else "")
        for w in sorted(workers, key=lambda w: w.worker_id)
        if w.hive_id == hive_id and w.managed_by == expectation.managed_by and w.state not in READY_STATES
    ]
    return f" ({'; '.join(seen)})" if seen else ""


def serves(http: httpx.Client, worker: QueenWorker, token: str | None = None) -> str:
    """Empty when ``worker`` streams a two-token completion on its OpenAI ``/v1/completions`` (an embedding
    model's worker, which refuses completions with ``WRONG_MODEL_TYPE``: embeds a text), else why not.

    ``token``: the credential of its hive's workers. Served: HTTP 200, a chunk with a ``finish_reason``, no error
    chunk, and the closing ``data: [DONE]``.
    """
    body = {"model": worker.model_id, "prompt": "ping", "max_tokens": 2, "stream": True}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with http.stream("POST", f"{worker.url}/v1/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                if response.status_code == 400 and '"WRONG_MODEL_TYPE"' in response.text:  # an embedding model
                    return _embeds(http, worker, headers)
                return f"HTTP {response.status_code} {response.text[:120]}"
            chunks = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return _stream_problem(chunks)


def _embeds(http: httpx.Client, worker: QueenWorker, headers: dict[str, str]) -> str:
    """Empty when an embedding model's ``worker`` embeds one text (``POST /v1/embeddings``), else why not."""
    response = http.post(f"{worker.url}/v1/embeddings", json={"model": worker.model_id, "input": "ping"},
                         headers=headers)  # fmt: skip
    if response.status_code != 200:
        return f"HTTP {response.status_code} {response.text[:120]} (POST /v1/embeddings)"
    try:
        data = response.json()["data"]
        served = bool(data[0]["embedding"])
    except (ValueError, KeyError, IndexError, TypeError):
        served = False
    return "" if served else f"not an embeddings answer: {response.text[:120]}"


def _stream_problem(chunks: list[str]) -> str:
    """Why the ``data:`` payloads of a completion stream are not a finished completion ("" when they are)."""
    if not chunks or chunks[-1] != "[DONE]":
        return "the stream did not end with data: [DONE]"
    finished = False
    for chunk in chunks[:-1]:
        try:
            parsed = json.loads(chunk)
        except ValueError:
            return f"not a JSON chunk: {chunk[:120]}"
        if not isinstance(parsed, dict):
            return f"not a completion chunk: {chunk[:120]}"
        if "error" in parsed:
            return f"error chunk: {chunk[:120]}"
        choices = parsed.get("choices") or [{}]
        finished = finished or bool(isinstance(choices[0], dict) and choices[0].get("finish_reason"))
    return "" if finished else "no chunk with a finish_reason"


def missing(queen: QueenView, expectation: Expectation, *, http: httpx.Client | None = None) -> str:
    """What the cluster still lacks ("" when ready), asking the queen (and the workers, with ``serves``).

    ``http``: the client the completions go through (default: a new one, 30 s timeout).
    """
    try:
        hives, workers = queen.hives(), queen.workers()
    except (QueenError, ValueError, KeyError) as exc:
        return f"the queen at {queen.base_url} ({exc})"
    why = missing_in(expectation, hives, workers)
    if why or not expectation.serves:
        return why
    verify = trust(queen.base_url)  # workers of a deploy.tls cluster are https://, signed by its CA
    placed = sorted(expectation.placed_workers(workers), key=lambda w: (w.hive_id, w.worker_id))
    with (
        httpx.Client(timeout=30, verify=verify) if http is None else nullcontext(http) as client,
        ThreadPoolExecutor(max_workers=max(1, min(16, len(placed)))) as pool,  # all workers asked at once
    ):
        reasons = list(pool.map(lambda w: serves(client, w, expectation.worker_token(w.hive_id)), placed))
    problems = zip(placed, reasons, strict=True)
    return ", ".join(f"worker {w.worker_id} on {w.hive_id} does not serve: {why}" for w, why in problems if why)


def wait_ready(
    queen: QueenView,
    expectation: Expectation,
    timeout_s: float,
    *,
    check_alive: Callable[[], None] | None = None,
    interval_s: float = 0.5,
) -> str:
    """Poll ``missing`` until the cluster is ready ("") or ``timeout_s`` ends (what is still missing).

    ``check_alive`` runs before each poll and raises to give up early (e.g. a local process exited).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check_alive is not None:
            check_alive()
        why = missing(queen, expectation)
        if not why or time.monotonic() >= deadline:
            return why
        time.sleep(interval_s)


def cluster_lines(queen_url: str, hives: Sequence[QueenHive], workers: Sequence[QueenWorker]) -> list[str]:
    """The cluster as the health gates print it: a title, then one line per hive with its workers."""
    lines = [f"rbee cluster at {queen_url}: {len(hives)} hive(s), {len(workers)} worker(s)"]
    for hive in sorted(hives, key=lambda h: h.hive_id):
        mine = [w for w in workers if w.hive_id == hive.hive_id]
        described = ", ".join(f"{w.model_id} {w.state}" for w in mine) or "no workers"
        lines.append(f"{hive.hive_id:<16} {hive.status:<7} {hive.url:<28} {described}")
    return lines
