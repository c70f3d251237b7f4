"""An engine that yields canned text pieces as fast as it can: the worker without llama.cpp.

It has :class:`rbee_runtime.worker.engine.Engine`'s interface (it is a subclass), so the real worker
service and HTTP app run on it unchanged; only the token source is free, which isolates what the
HTTP layers (worker, queen, a proxy) cost per token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from rbee_runtime.common.contracts import GenerateRequest, GpuInfo
from rbee_runtime.common.offload import OffloadPlan
from rbee_runtime.worker.engine import Engine, EngineConfig, GenerationStats

#: The pieces a canned generation cycles through (one per token).
CANNED_PIECES = (" the", " honey", " bee", " flies", " to", " a", " flower", " and", " back", ".")


class CannedEngine(Engine):
    """``slots`` free slots that answer every request with ``max_tokens`` canned pieces, no sampling.

    ``token_interval_s`` 0: every piece at once (the worker hands them over in batches); else one piece per
    interval, on a fixed schedule from the first (a paced engine, like a GPU's steady decode).
    """

    def __init__(
        self, config: EngineConfig, slots: int, detect: Callable[[], list[GpuInfo]] = lambda: [],
        token_interval_s: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__(config, slots, detect)
        self.token_interval_s = token_interval_s
        self._ready = False

    @property
    def loaded(self) -> bool:
        return self._ready

    def load(self) -> None:
        """Nothing to load: no model file is read."""
        self.offload = OffloadPlan(0, None, 0, None, "canned engine: no model, no GPU")
        self._ready = True

    def close(self) -> None:
        self._ready = False

    def generate(
        self,
        slot: int,
        request: GenerateRequest,
        cancel: threading.Event,
        stats: GenerationStats,
        on_token: Callable[[], None] = lambda: None,
    ) -> Iterator[str]:
        """Yield ``request.max_tokens`` pieces at once (stops after the next piece once ``cancel`` is set)."""
        stats.prompt_tokens = len((request.prompt or "").split()) or 1
        stats.first_token_at = start = time.perf_counter()
        try:
            for i in range(request.max_tokens):
                if self.token_interval_s and (wait := start + i * self.token_interval_s - time.perf_counter()) > 0:
                    time.sleep(wait)
                if cancel.is_set():
                    stats.stop_reason = "cancelled"
                    return
                stats.tokens_out += 1
                on_token()
                yield CANNED_PIECES[i % len(CANNED_PIECES)]
            stats.stop_reason = "length"
        finally:
            stats.finished_at = time.perf_counter()
