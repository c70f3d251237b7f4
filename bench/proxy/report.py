"""The run as text (the printed table), as JSON (every figure), and compared with an earlier run's JSON."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The proxy modes compared with ``direct``, in print order.
PROXIES = ("queen", "litellm")
PAIRED_KEYS = (
    "ttft_added_ms_p50", "ttft_added_ms_p95", "per_token_added_us_p50", "per_token_added_us_p95",
    "decode_rate_ratio", "ttft_ratio", "cpu_us_per_token",
)  # fmt: skip
MODE_KEYS = ("ttft_ms_p50", "decode_tps_p50")
LOAD_KEYS = ("tokens_per_s", "cpu_us_per_token")


def git_state(root: Path) -> dict[str, Any]:
    """The commit the run measured, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine() -> dict[str, Any]:
    """Cores, OS, Python, and the load average when the run starts (others' work skews every figure)."""
    return {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }  # fmt: skip


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The figures a later run is compared on, flat: ``<workload>.<mode>.<figure>``, ``concurrency.<mode>.<figure>``."""
    out: dict[str, float] = {}
    for workload, data in result["workloads"].items():
        for mode, figures in data["modes"].items():
            keys = MODE_KEYS + (PAIRED_KEYS if mode in PROXIES else ())
            out |= {f"{workload}.{mode}.{k}": figures[k] for k in keys if k in figures}
    load = result.get("concurrency") or {}
    for mode, figures in load.get("modes", {}).items():
        out |= {f"concurrency.{mode}.{k}": figures[k] for k in LOAD_KEYS if figures.get(k) is not None}
    return out


def default_path(results_dir: Path, commit: str) -> Path:
    """``bench/results/proxy-<UTC date and time>-<commit>.json``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return results_dir / f"proxy-{stamp}-{commit[:10] or 'nogit'}.json"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    p = result["params"]
    lines = [
        f"proxy benchmark: {p['rounds']} paired rounds (+{p['warmup']} warm-up), {p['max_tokens']} tokens, "
        f"temperature {p['temperature']}, seed {p['seed']}, API {p.get('api', 'completions')}; "
        f"commit {result['git']['commit'][:10]}"
        f"{' (dirty)' if result['git']['dirty'] else ''}, {result['machine']['cpus']} CPUs, load "
        f"{result['machine']['loadavg_at_start'][0]:.1f} at start",
    ]
    for workload, data in result["workloads"].items():
        lines += ["", f"[{workload}] {data['describe']}; direct path: {data['direct_protocol']}"]
        lines.append(f"  {'mode':<8} {'TTFT p50 ms':>12} {'p95':>8} {'decode p50 tok/s':>17} {'p95':>9} {'tokens':>7}")
        for mode, f in data["modes"].items():
            lines.append(
                f"  {mode:<8} {_num(f['ttft_ms_p50'], 2):>12} {_num(f['ttft_ms_p95'], 2):>8} "
                f"{_num(f['decode_tps_p50']):>17} {_num(f['decode_tps_p95']):>9} {_num(f['tokens_p50'], 0):>7}"
            )
        for mode, why in data["skipped"].items():
            lines.append(f"  {mode:<8} skipped: {why}")
        paired = [m for m in PROXIES if m in data["modes"]]
        if paired:
            lines.append(
                f"  {'vs direct':<9} {'+TTFT p50 ms':>12} {'p95':>8} {'+µs/token p50':>14} {'p95':>9} "
                f"{'decode ×':>9} {'TTFT ×':>7} {'n≠':>4} {'CPU µs/token':>13}"
            )
        for mode in paired:
            f = data["modes"][mode]
            lines.append(
                f"  {mode:<9} {_num(f['ttft_added_ms_p50'], 2):>12} {_num(f['ttft_added_ms_p95'], 2):>8} "
                f"{_num(f['per_token_added_us_p50']):>14} {_num(f['per_token_added_us_p95']):>9} "
                f"{_num(f['decode_rate_ratio'], 3):>9} {_num(f['ttft_ratio'], 2):>7} {f['token_mismatches']:>4} "
                f"{_num(f.get('cpu_us_per_token')):>13}"
            )
    load = result.get("concurrency")
    if load:
        lines += ["", f"[concurrency] {load['streams']} simultaneous streams × {load['requests_per_stream']} requests, "
                      f"canned worker; CPU: {load['cpu_of']}"]  # fmt: skip
        lines.append(f"  {'mode':<8} {'tokens/s':>10} {'× direct':>9} {'CPU µs/token':>13} {'failed':>7}")
        direct = load["modes"].get("direct", {}).get("tokens_per_s")
        for mode, f in load["modes"].items():
            ratio = f["tokens_per_s"] / direct if direct else None
            cpu = _num(f["cpu_us_per_token"])
            failed = f"{f.get('errors', 0)}/{f['requests']}"
            lines.append(f"  {mode:<8} {_num(f['tokens_per_s'], 0):>10} {_num(ratio, 2):>9} {cpu:>13} {failed:>7}")
            if f.get("first_error"):
                lines.append(f"  {'':<8} first failure: {f['first_error'][:200]}")
        for mode, why in load["skipped"].items():
            lines.append(f"  {mode:<8} skipped: {why}")
    return "\n".join(lines)


def compare(new: dict[str, Any], old: dict[str, Any]) -> str:
    """Each headline figure of ``new`` beside ``old``'s, with the ratio new/old."""
    a, b = headline(old), headline(new)
    lines = [f"compared with {old['git']['commit'][:10]} ({old['started_at']}): new / old", ""]
    lines.append(f"  {'figure':<44} {'old':>10} {'new':>10} {'new/old':>8}")
    for key in sorted(b.keys() & a.keys()):
        ratio = b[key] / a[key] if a[key] else None
        lines.append(f"  {key:<44} {_num(a[key], 2):>10} {_num(b[key], 2):>10} {_num(ratio, 2):>8}")
    for key in sorted(b.keys() ^ a.keys()):
        lines.append(f"  {key:<44} only in the {'new' if key in b else 'old'} run")
    return "\n".join(lines)


def write(result: dict[str, Any], path: Path) -> Path:
    """Write the JSON at ``path`` and the table beside it (same name, ``.txt``); returns the table's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    table = path.with_suffix(".txt")
    table.write_text(render(result) + "\n")
    return table
