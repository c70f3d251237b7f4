"""One frame of ``rbee top``: the dashboard state (``GET /ui/api/state``) as rich tables."""

from __future__ import annotations

import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rbee.cli.cluster_cmd import gpu_line
from rbee_runtime.queen.dashboard.schema import DashboardState

#: Most recent errors shown under the tables.
ERRORS_SHOWN = 5
_STATE_STYLE = {"idle": "green", "busy": "yellow", "loading": "cyan", "draining": "cyan", "crashed": "bold red",
                "stopped": "red"}  # fmt: skip


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``, ``1d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def latency(seconds: float | None) -> str:
    """``38 ms`` / ``1.25 s``; ``-`` when there was no request."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, show_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def _summary(state: DashboardState, url: str) -> Text:
    r = state.rates
    online = sum(h.status == "online" for h in state.hosts)
    busy = sum(w.slots_busy for w in state.workers)
    total = sum(w.slots_total for w in state.workers if w.routable)
    at = datetime.datetime.fromtimestamp(state.now).strftime("%H:%M:%S")
    text = Text.assemble(("rbee top", "bold yellow"), f"  queen {state.queen_id} at {url}  {at}\n")
    text.append(
        f"hosts {online}/{len(state.hosts)} online · slots {busy}/{total} busy · queued "
        f"{sum(m.queued for m in state.models)} · {r.tokens_per_s:.1f} tokens/s · {r.requests_per_s:.2f} req/s · "
        f"{r.errors} errors (last {r.window_s:.0f}s) · first token p50 {latency(r.ttft_p50_s)} "
        f"p95 {latency(r.ttft_p95_s)} (last {r.ttft_window_s / 60:.0f} min)"
    )
    return text


def frame(state: DashboardState, url: str, footer: str = "") -> RenderableType:
    """Hosts with their GPUs, workers, models with their queues and traffic, the last errors."""
    hosts = _table("hosts", "hive", "host", "status", "heartbeat", "CPUs", "RAM free", "GPUs", "workers", "version")
    for h in state.hosts:
        gpus = "\n".join(gpu_line(g) for g in h.gpus) or "CPU only"
        status = Text(h.status, style="green" if h.status == "online" else "bold red")
        hosts.add_row(
            h.hive_id, h.host, status, f"{h.last_heartbeat_age_s:.1f}s ago", str(h.cpu_count),
            f"{h.ram_available_bytes / 2**30:.1f}/{h.ram_total_bytes / 2**30:.1f} GiB", gpus,
            f"{h.workers}/{h.max_workers}", h.version,
        )  # fmt: skip
    workers = _table("workers", "worker", "model", "hive", "device", "slots", "state", "uptime", "restarts",
                     "last error")  # fmt: skip
    for w in state.workers:
        label = w.state if w.status == "online" else f"{w.state} (hive stale)"
        error = (w.last_error or "").strip().splitlines()
        workers.add_row(
            w.worker_id, w.model_id, w.hive_id, "cpu" if w.backend == "cpu" else f"{w.backend}:{w.device}",
            f"{w.slots_busy}/{w.slots_total}", Text(label, style=_STATE_STYLE.get(w.state, "")),
            duration(w.uptime_s), str(w.restarts), Text(error[0] if error else "", style="red"),
        )  # fmt: skip
    models = _table("models", "model", "workers", "slots busy", "queued", "tokens/s", "req/s", "first token")
    for m in state.models:
        models.add_row(
            m.model_id, str(m.workers), f"{m.slots_busy}/{m.slots_total}",
            Text(str(m.queued), style="bold yellow" if m.queued else ""), f"{m.tokens_per_s:.1f}",
            f"{m.requests_per_s:.2f}", latency(m.ttft_avg_s),
        )  # fmt: skip
    parts: list[RenderableType] = [_summary(state, url), hosts, workers, models]
    if state.errors:
        errors = Text("recent errors\n", style="bold")
        for e in state.errors[:ERRORS_SHOWN]:
            at = datetime.datetime.fromtimestamp(e.at).strftime("%H:%M:%S")
            errors.append(f"{at} {e.source:<7} ", style="red")
            errors.append(e.message.splitlines()[0] if e.message else "")
            errors.append("\n")
        parts.append(errors)
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)
