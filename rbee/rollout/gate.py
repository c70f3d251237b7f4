"""The health gate of a rolling deploy: a batch passes when the queen sees each of its hives fresh,
their placed workers ready, and each of those workers serves a real completion."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx

from rbee.client import QueenClient, QueenError
from rbee_runtime.common.contracts import WorkerState


@dataclass(frozen=True)
class GateTarget:
    """One host of a batch: its hive id and how many placed workers it must run."""

    host: str
    placed_workers: int


def _serves(client: httpx.Client, url: str) -> str:
    """Empty when the worker at ``url`` completes a two-token generation, else why not."""
    body = {"request_id": f"gate-{uuid.uuid4().hex[:12]}", "prompt": "ping", "max_tokens": 2}
    try:
        with client.stream("POST", f"{url}/v1/generate", json=body) as response:
            if response.status_code != 200:
                response.read()
                return f"HTTP {response.status_code} {response.text[:120]}"
            text = "".join(line for line in response.iter_lines() if line.startswith("data:"))
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if '"type": "end"' in text or '"type":"end"' in text else "no end event"


def missing(queen: QueenClient, targets: list[GateTarget], since: float) -> str:
    """What the batch still lacks ("" when it passes). ``since``: wall time the batch's deploy ended."""
    try:
        hives = {h.hive_id: h for h in queen.hives()}
        workers = queen.workers()
    except QueenError as exc:
        return f"the queen ({exc})"
    waited = time.time() - since
    problems = []
    with httpx.Client(timeout=30) as http:
        for target in targets:
            hive = hives.get(target.host)
            if hive is None or hive.status != "online":
                problems.append(f"hive {target.host} is not registered with the queen")
                continue
            if hive.last_heartbeat_age_s > waited:
                problems.append(f"hive {target.host} has not reported since the deploy (is it running?)")
                continue
            placed = [w for w in workers if w.hive_id == target.host and w.managed_by == "external"]
            ready = [w for w in placed if w.state in (WorkerState.IDLE, WorkerState.BUSY)]
            if len(ready) < target.placed_workers:
                problems.append(f"{target.host}: {len(ready)}/{target.placed_workers} placed worker(s) ready")
                continue
            for worker in ready:
                why = _serves(http, worker.url)
                if why:
                    problems.append(f"worker {worker.worker_id} on {target.host} does not serve: {why}")
    return "; ".join(problems)


def wait_for(queen: QueenClient, targets: list[GateTarget], since: float, timeout_s: float) -> str:
    """Poll the gate until it passes ("") or the timeout ends (what is still missing)."""
    deadline = time.monotonic() + timeout_s
    why = missing(queen, targets, since)
    while why and time.monotonic() < deadline:
        time.sleep(1.0)
        why = missing(queen, targets, since)
    return why
