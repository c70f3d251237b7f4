"""``python -m bench.proxy``: the command line, and the run it describes.

One run starts a local cluster (queen + hive + a llama.cpp worker on the tiny GGUF), a canned-token
worker announcing itself to the same hive, and (when installed) LiteLLM's proxy in front of both
workers; then per workload it streams the same request through every mode in paired rounds, and
optionally loads the canned worker with many simultaneous streams.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import charts
from bench.proxy import report
from bench.proxy.cluster import CANNED_MODEL_ID, BenchCluster, ClusterNotReadyError
from bench.proxy.concurrency import run_load
from bench.proxy.litellm_proxy import LiteLLMProxy, find_litellm
from bench.proxy.paired import run_rounds
from bench.proxy.processes import ChildExitedError
from bench.proxy.protocols import API, Sampling, StreamProtocol, openai_protocol
from bench.proxy.sample import Endpoint, StreamError
from rbee.local.runner import LocalClusterError
from rbee.tiny_model import TINY_MODEL_ID

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
WORKLOADS = {
    "llama": (TINY_MODEL_ID, "llama.cpp worker, tiny GGUF (rbee-tiny), CPU"),
    "canned": (CANNED_MODEL_ID, "canned-token worker (the real worker, no llama.cpp): the proxy's own cost"),
}
MODES = ("direct", "queen", "litellm")


def _csv(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        wrong = [v for v in items if v not in allowed]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma separated), got {value!r}")
        return items

    return parse


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _not_negative(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.proxy",
        description="What the queen, and LiteLLM's proxy, add to a worker's stream: paired rounds against the worker "
        "itself (a llama.cpp worker and a canned-token one), and a load test. See bench/README.md.",
    )
    p.add_argument("--rounds", type=_positive, default=200, help="paired rounds per workload (default 200)")
    p.add_argument("--warmup", type=_count, default=5, help="unrecorded rounds first (default 5)")
    p.add_argument("--max-tokens", type=_positive, default=64, help="tokens per stream (default 64)")
    p.add_argument("--prompt", default="The honey bee")
    p.add_argument("--api", choices=list(API), default="completions", help="the OpenAI API every mode is called on")
    p.add_argument("--seed", type=int, default=42, help="sampling seed of every request (temperature 0)")
    p.add_argument(
        "--canned-pace-us",
        type=_not_negative,
        default=0.0,
        help="the canned worker's µs between two tokens (default 0: all at once, handed over in batches)",
    )
    p.add_argument("--workloads", type=_csv(list(WORKLOADS)), default=list(WORKLOADS), help="llama,canned")
    p.add_argument("--modes", type=_csv(MODES), default=list(MODES), help="direct,queen,litellm (direct always runs)")
    p.add_argument("--concurrency", type=_count, default=32, help="simultaneous streams of the load test (0: none)")
    p.add_argument("--concurrency-requests", type=_positive, default=20, help="streams each client sends in a row")
    p.add_argument("--litellm", default=None, help="the litellm command (default: $RBEE_BENCH_LITELLM, venv, PATH)")
    p.add_argument("--json", type=Path, default=None, help="write every figure as JSON here (+ .txt table, .png chart)")
    p.add_argument("--save", action="store_true", help="write the JSON to bench/results/proxy-<date>-<commit>.json")
    p.add_argument("--compare", type=Path, default=None, help="an earlier run's JSON: print each headline's ratio")
    p.add_argument("--keep", type=Path, default=None, help="a folder for the services' logs (default: a temp dir)")
    return p


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Targets:
    """What the run streams through: the cluster's workers and queen, LiteLLM's proxy (None: why not)."""

    cluster: BenchCluster
    api: str
    modes: list[str]
    protocols: dict[str, StreamProtocol]
    litellm: LiteLLMProxy | None
    litellm_skip: str

    def upstream(self, workload: str) -> str:
        return self.cluster.worker_url if workload == "llama" else self.cluster.canned_url

    def endpoints(self, workload: str) -> tuple[list[Endpoint], dict[str, str]]:
        """The modes of ``workload`` to measure, and the skipped ones with the reason."""
        model = WORKLOADS[workload][0]
        found = [Endpoint("direct", self.upstream(workload), self.protocols[workload], self.cluster.worker_headers)]
        if "queen" in self.modes:
            found.append(Endpoint("queen", self.cluster.queen_url, openai_protocol(self.api, model), {}))
        skipped = {}
        if self.litellm is not None:
            found.append(Endpoint("litellm", self.litellm.url, openai_protocol(self.api, model), self.litellm.headers))
        elif "litellm" in self.modes:
            skipped["litellm"] = self.litellm_skip
        return found, skipped

    def proxy_pids(self) -> dict[str, int]:
        """The process of each proxy mode (its CPU time is measured)."""
        return {"queen": self.cluster.queen_pid, **({"litellm": self.litellm.child.pid} if self.litellm else {})}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse, measure, print the table (and the comparison), write the JSON; exit 1 with the reason when the
    services under test cannot be started or fail."""
    parser = build_parser()
    args = parser.parse_args(argv)
    old = _earlier_run(parser, args.compare)  # fails before minutes of work
    if args.json or args.save:
        charts.require_matplotlib(parser.prog)  # the chart goes beside the JSON: stop now, not after the run
    modes = ["direct", *(m for m in MODES[1:] if m in args.modes)]
    sampling = Sampling(prompt=args.prompt, max_tokens=args.max_tokens, seed=args.seed)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "proxy", "schema": 1, "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "rounds": args.rounds, "warmup": args.warmup, "max_tokens": args.max_tokens, "prompt": args.prompt,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": args.seed, "api": args.api,
            "workloads": args.workloads, "modes": modes, "canned_pace_us": args.canned_pace_us,
            "concurrency": args.concurrency, "concurrency_requests": args.concurrency_requests,
            "argv": list(argv if argv is not None else sys.argv[1:]),
        },
        "git": report.git_state(ROOT), "machine": report.machine(),
    }  # fmt: skip
    try:
        result |= measure(args, modes, sampling)
    except (LocalClusterError, ClusterNotReadyError, ChildExitedError, StreamError) as exc:
        _say(f"bench.proxy: error: {exc}")
        sys.exit(1)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    result["headline"] = report.headline(result)
    print(report.render(result))
    path = args.json or (report.default_path(RESULTS, result["git"]["commit"]) if args.save else None)
    if path is not None:
        table = report.write(result, path)
        chart = charts.proxy_chart(result, path.with_suffix(".png"))
        _say(f"wrote {path}, {table} and {chart}")
    if old is not None:
        print()
        print(report.compare(result, old))


def measure(args: argparse.Namespace, modes: list[str], sampling: Sampling) -> dict[str, Any]:
    """Start everything, run the paired rounds of each workload and the load test, stop everything."""
    with ExitStack() as stack:
        workdir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rbee-bench-proxy-")))
        workdir.mkdir(parents=True, exist_ok=True)
        _say(f"starting the cluster (logs: {workdir / 'logs'})")
        slots = max(args.concurrency, 1) + 2
        cluster = stack.enter_context(BenchCluster(workdir, slots, canned_interval_us=args.canned_pace_us))
        upstreams = {"llama": cluster.worker_url, "canned": cluster.canned_url}
        protocols = {w: openai_protocol(args.api, WORKLOADS[w][0]) for w in WORKLOADS}
        litellm, why = _start_litellm(stack, args, modes, cluster, upstreams, workdir)
        targets = Targets(cluster, args.api, modes, protocols, litellm, why)
        out: dict[str, Any] = {"litellm": {"used": litellm is not None, "reason": why}, "workloads": {}}
        for workload in args.workloads:
            out["workloads"][workload] = paired_workload(targets, workload, args, sampling)
        if args.concurrency > 0:
            out["concurrency"] = load_test(targets, args, sampling)
    return out


def paired_workload(targets: Targets, workload: str, args: argparse.Namespace, sampling: Sampling) -> dict[str, Any]:
    """The paired rounds of one workload, as the JSON's ``workloads.<name>``."""
    found, skipped = targets.endpoints(workload)
    _say(f"[{workload}] {args.rounds} paired rounds: {', '.join(e.name for e in found)}")
    pids = targets.proxy_pids()
    watch = {e.name: pids[e.name] for e in found if e.name in pids}
    tick = _progress(args.warmup + args.rounds)
    run = run_rounds(found, sampling, args.rounds, args.warmup, progress=tick, watch=watch)
    paced = workload == "canned" and args.canned_pace_us > 0
    pace = f", one token every {args.canned_pace_us:g} µs" if paced else ""
    return {
        "describe": WORKLOADS[workload][1] + pace, "model": WORKLOADS[workload][0],
        "direct_protocol": f"POST {targets.protocols[workload].path}", "modes": run.figures(), "skipped": skipped,
        "ttft_ms_samples": {mode: [round(s.ttft_s * 1e3, 3) for s in samples] for mode, samples in run.samples.items()},
    }  # fmt: skip


def load_test(targets: Targets, args: argparse.Namespace, sampling: Sampling) -> dict[str, Any]:
    """``--concurrency`` streams through each mode to the canned worker, as the JSON's ``concurrency``."""
    found, skipped = targets.endpoints("canned")
    canned = targets.cluster.canned
    pids: dict[str, int | None] = {"direct": canned.pid if canned else None, **targets.proxy_pids()}
    load: dict[str, Any] = {
        "streams": args.concurrency, "requests_per_stream": args.concurrency_requests, "modes": {},
        "skipped": skipped, "cpu_of": "direct: the canned worker's process; queen: the queen's; "
        "litellm: LiteLLM's proxy (with its children)",
    }  # fmt: skip
    for endpoint in found:
        _say(f"[concurrency] {args.concurrency} streams through {endpoint.name}")
        outcome = run_load(endpoint, sampling, args.concurrency, args.concurrency_requests, pids[endpoint.name])
        load["modes"][endpoint.name] = outcome.figures()
    return load


def _earlier_run(parser: argparse.ArgumentParser, path: Path | None) -> dict[str, Any] | None:
    """The JSON of ``--compare`` (None without it); a usage error when it is not an earlier run's JSON."""
    if path is None:
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"--compare {path}: cannot read an earlier run from it ({exc})")
    if not isinstance(old, dict) or old.get("benchmark") != "proxy" or "workloads" not in old:
        parser.error(f"--compare {path}: not the JSON of a proxy benchmark run (--json)")
    return old


def _progress(total: int) -> Callable[[int], None]:
    step = max(total // 4, 1)

    def tick(done: int) -> None:
        if done % step == 0 or done == total:
            _say(f"  {done}/{total} rounds")

    return tick


def _start_litellm(
    stack: ExitStack, args: argparse.Namespace, modes: list[str], cluster: BenchCluster,
    upstreams: dict[str, str], workdir: Path,
) -> tuple[LiteLLMProxy | None, str]:  # fmt: skip
    """LiteLLM's proxy in front of the workers' OpenAI routes, or None and why not."""
    if "litellm" not in modes:
        return None, "not asked for (--modes)"
    command, found = find_litellm(args.litellm)
    if command is None:
        _say(f"litellm mode skipped: {found}")
        return None, found
    models = {WORKLOADS[w][0]: f"{url}/v1" for w, url in upstreams.items()}
    _say(f"starting LiteLLM's proxy: {found}")
    proxy = LiteLLMProxy(command, models, cluster.worker_token, workdir, args.api)
    stack.callback(proxy.stop)
    try:
        proxy.wait_ready()
    except (ChildExitedError, TimeoutError) as exc:
        why = f"LiteLLM's proxy ({found}) did not start: {str(exc).splitlines()[0]}"
        _say(f"litellm mode skipped: {why}")
        return None, why
    return proxy, found
