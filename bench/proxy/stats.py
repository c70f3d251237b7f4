"""Percentiles of each mode's samples, and of the paired differences between a proxy and the direct path."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.proxy.sample import Sample

Figures = dict[str, float]


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (linear interpolation between the closest ranks)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def p50_p95(name: str, values: Sequence[float]) -> Figures:
    return {f"{name}_p50": percentile(values, 50), f"{name}_p95": percentile(values, 95)}


def mode_figures(samples: Sequence[Sample]) -> Figures:
    """TTFT (ms) and decode rate (tokens/s) p50/p95, and the tokens per stream (p50)."""
    return {
        **p50_p95("ttft_ms", [s.ttft_s * 1e3 for s in samples]),
        **p50_p95("decode_tps", [s.decode_rate for s in samples]),
        "tokens_p50": percentile([s.tokens for s in samples], 50),
        "samples": len(samples),
    }


def paired_figures(proxied: Sequence[Sample], direct: Sequence[Sample]) -> Figures:
    """What the proxy adds, pair by pair (same round): first-token ms, µs per token, decode-rate ratio.

    ``per_token_added_us`` is ``1e6/rate_proxy - 1e6/rate_direct`` (negative when the proxy holds the first
    token back more than the later ones, which then arrive closer together); ``last_token_added_ms`` the
    difference of the times to the last token (the whole stream's delay); ``decode_rate_ratio`` the median of
    ``rate_proxy/rate_direct``; ``ttft_ratio`` the ratio of the two TTFT medians; ``token_mismatches`` the
    pairs whose streams did not bring the same number of pieces (0 when the bodies really are identical).
    """
    pairs = [(p, d) for p, d in zip(proxied, direct, strict=True) if p.decode_rate > 0 and d.decode_rate > 0]
    ttft = [(p.ttft_s - d.ttft_s) * 1e3 for p, d in zip(proxied, direct, strict=True)]
    per_token = [1e6 / p.decode_rate - 1e6 / d.decode_rate for p, d in pairs]
    last = [(p.ttft_s + p.decode_s - d.ttft_s - d.decode_s) * 1e3 for p, d in zip(proxied, direct, strict=True)]
    ratios = [p.decode_rate / d.decode_rate for p, d in pairs]
    direct_ttft = percentile([d.ttft_s for d in direct], 50)
    return {
        **p50_p95("ttft_added_ms", ttft),
        **p50_p95("per_token_added_us", per_token),
        **p50_p95("last_token_added_ms", last),
        "decode_rate_ratio": percentile(ratios, 50),
        "ttft_ratio": percentile([p.ttft_s for p in proxied], 50) / direct_ttft if direct_ttft > 0 else float("nan"),
        "token_mismatches": sum(p.tokens != d.tokens for p, d in zip(proxied, direct, strict=True)),
        "pairs": len(ttft),
    }
