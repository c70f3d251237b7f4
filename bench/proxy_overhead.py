"""What the queen costs: the same worker called directly and through the queen, interleaved.

Run: ``.venv/bin/python -m bench.proxy_overhead [--rounds 20] [--max-tokens 64]``.
Starts a local cluster (queen + hive + one worker on the tiny model), then alternates a direct
``POST {worker}/v1/generate`` stream with a ``POST {queen}/v1/completions`` stream (same prompt,
same token count), and prints time to first token (p50/p95) and tokens/s for both, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from rbee.local.plan import default_spec, plan_local
from rbee.local.runner import LocalCluster
from rbee.tiny_model import TINY_MODEL_ID, ensure_tiny_model
from rbee_runtime.common.ports import free_port


@dataclass
class Sample:
    """One streamed generation: seconds to the first token, tokens, total seconds."""

    ttft_s: float
    tokens: int
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s > 0 else 0.0


def _stream(client: httpx.Client, url: str, body: dict[str, object]) -> Sample:
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line.removeprefix("data:"))
            text = event.get("text") if event.get("type") == "token" else None
            if text is None and "choices" in event:
                text = event["choices"][0].get("text") or None
            if text:
                tokens += 1
                first = first or time.perf_counter()
    end = time.perf_counter()
    return Sample((first or end) - start, tokens, end - start)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _report(name: str, samples: list[Sample]) -> tuple[float, float]:
    ttft = [s.ttft_s * 1000 for s in samples]
    tps = statistics.median(s.tokens_per_s for s in samples)
    print(f"{name:<8} ttft p50 {_pct(ttft, 0.5):7.2f} ms  p95 {_pct(ttft, 0.95):7.2f} ms  tokens/s p50 {tps:8.1f}")
    return _pct(ttft, 0.5), tps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rbee-bench-") as tmp:
        spec = default_spec(ensure_tiny_model(), free_port(), free_port())
        cluster = LocalCluster(plan_local(spec, Path.cwd(), Path(tmp)), Path(tmp) / "logs")
        cluster.start()
        try:
            cluster.wait_ready(120)
            queen = cluster.plan.queen_url
            with httpx.Client(timeout=120) as client:
                worker = client.get(f"{queen}/v1/workers").json()["workers"][0]["url"]
                prompt = "The honey bee"
                direct, proxied = [], []
                for i in range(args.rounds + 2):  # two warm-up rounds are dropped
                    d = _stream(client, f"{worker}/v1/generate", {
                        "request_id": f"bench-{uuid.uuid4().hex}", "prompt": prompt,
                        "max_tokens": args.max_tokens, "seed": i,
                    })  # fmt: skip
                    p = _stream(client, f"{queen}/v1/completions", {
                        "model": TINY_MODEL_ID, "prompt": prompt, "max_tokens": args.max_tokens,
                        "stream": True, "seed": i,
                    })  # fmt: skip
                    if i >= 2:
                        direct.append(d)
                        proxied.append(p)
        finally:
            cluster.stop()
    print(f"proxy overhead: {args.rounds} interleaved rounds, {args.max_tokens} tokens each, tiny model, CPU")
    d_ttft, d_tps = _report("direct", direct)
    q_ttft, q_tps = _report("queen", proxied)
    print(f"ratio queen/direct: ttft p50 x{q_ttft / d_ttft:.2f}, tokens/s x{q_tps / d_tps:.2f}")


if __name__ == "__main__":
    main()
