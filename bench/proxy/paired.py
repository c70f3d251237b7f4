"""Paired rounds: each round streams the same request once through every mode, in a rotating order."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx

from bench.proxy.protocols import Sampling
from bench.proxy.sample import Endpoint, Sample, measure
from bench.proxy.stats import Figures, mode_figures, paired_figures

#: The mode every other one is compared with.
DIRECT = "direct"


@dataclass
class PairedRun:
    """Samples of every mode, round by round (index ``i`` of each list is round ``i``)."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def figures(self) -> dict[str, Figures]:
        """Per mode its own figures; per proxy mode also the paired ones against ``direct``."""
        out = {name: mode_figures(samples) for name, samples in self.samples.items()}
        direct = self.samples.get(DIRECT)
        for name, samples in self.samples.items():
            if name != DIRECT and direct:
                out[name] |= paired_figures(samples, direct)
        return out


def orders(endpoints: Sequence[Endpoint]) -> itertools.cycle[tuple[Endpoint, ...]]:
    """Round orders: every permutation in turn (two modes: A B, B A, A B, …), so no mode always goes first."""
    return itertools.cycle(itertools.permutations(endpoints))


def run_rounds(
    endpoints: Sequence[Endpoint], sampling: Sampling, rounds: int, warmup: int, timeout_s: float = 60.0,
    progress: Callable[[int], None] = lambda _: None,
) -> PairedRun:  # fmt: skip
    """``warmup`` unrecorded rounds, then ``rounds`` recorded ones; each mode keeps its own connection pool."""
    run = PairedRun({e.name: [] for e in endpoints})
    with ExitStack() as stack:
        clients = {e.name: stack.enter_context(httpx.Client(timeout=timeout_s, trust_env=False)) for e in endpoints}
        for i, order in zip(range(warmup + rounds), orders(endpoints), strict=False):
            for endpoint in order:
                sample = measure(clients[endpoint.name], endpoint, sampling)
                if i >= warmup:
                    run.samples[endpoint.name].append(sample)
            progress(i + 1)
    return run
