"""Paired rounds: each round streams the same request once through every mode, in a rotating order."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx

from bench.proxy.concurrency import cpu_seconds
from bench.proxy.protocols import Sampling
from bench.proxy.sample import Endpoint, Sample, measure
from bench.proxy.stats import Figures, mode_figures, paired_figures

#: The mode every other one is compared with.
DIRECT = "direct"


@dataclass
class PairedRun:
    """Samples of every mode, round by round (index ``i`` of each list is round ``i``); ``cpu_s``: CPU seconds
    the watched process of a mode spent over the recorded rounds."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, Figures]:
        """Per mode its own figures; per proxy mode also the paired ones against ``direct``, and the CPU time
        its process spent per token delivered (``cpu_us_per_token``, when watched)."""
        out = {name: mode_figures(samples) for name, samples in self.samples.items()}
        direct = self.samples.get(DIRECT)
        for name, samples in self.samples.items():
            if name != DIRECT and direct:
                out[name] |= paired_figures(samples, direct)
            tokens = sum(s.tokens for s in samples)
            if name in self.cpu_s and tokens:
                out[name]["cpu_us_per_token"] = self.cpu_s[name] * 1e6 / tokens
        return out


def orders(endpoints: Sequence[Endpoint]) -> itertools.cycle[tuple[Endpoint, ...]]:
    """Round orders: every permutation in turn (two modes: A B, B A, A B, …), so no mode always goes first."""
    return itertools.cycle(itertools.permutations(endpoints))


def run_rounds(
    endpoints: Sequence[Endpoint], sampling: Sampling, rounds: int, warmup: int, timeout_s: float = 60.0,
    progress: Callable[[int], None] = lambda _: None, watch: Mapping[str, int] | None = None,
) -> PairedRun:  # fmt: skip
    """``warmup`` unrecorded rounds, then ``rounds`` recorded ones; each mode keeps its own connection pool.

    ``watch``: per mode the pid whose CPU time (with its children's) is measured over the recorded rounds —
    a proxy's process, which does work for its own mode's requests only.
    """
    watch = dict(watch or {})
    run = PairedRun({e.name: [] for e in endpoints})
    before: dict[str, float] = {}
    with ExitStack() as stack:
        clients = {e.name: stack.enter_context(httpx.Client(timeout=timeout_s, trust_env=False)) for e in endpoints}
        for i, order in zip(range(warmup + rounds), orders(endpoints), strict=False):
            if i == warmup:
                before = {name: cpu_seconds(pid) for name, pid in watch.items()}
            for endpoint in order:
                sample = measure(clients[endpoint.name], endpoint, sampling)
                if i >= warmup:
                    run.samples[endpoint.name].append(sample)
            progress(i + 1)
    run.cpu_s = {name: cpu_seconds(pid) - before[name] for name, pid in watch.items()}
    return run
