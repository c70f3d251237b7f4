"""The per-token hooks of a generation: the logits processor every token passes (:class:`TokenGate`: counting,
``logit_bias``, the distribution for ``logprobs``, cancel), and what each sampled token was
(:class:`SampledTokens`, :class:`LogprobRecorder`)."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rbee_runtime.common.pieces import TokenLogprob

if TYPE_CHECKING:
    import threading

    from rbee_runtime.worker.engine import GenerationStats


@dataclass
class TokenGate:
    """Logits processor called once per sampled token: counts, adds the logit bias, keeps the distribution
    when log probabilities are asked for, and forces EOS once cancelled."""

    cancel: threading.Event
    eos_id: int
    stats: GenerationStats
    on_token: Callable[[], None]
    bias_ids: npt.NDArray[np.intp] | None = None
    bias_values: npt.NDArray[np.single] | None = None
    #: Keep each step's log probabilities (``logprobs`` asked for).
    keep_logprobs: bool = False
    cancelled: bool = field(default=False, init=False)
    #: The log probabilities of the step being sampled (the model's own, before penalties and grammar).
    logprobs: npt.NDArray[np.single] | None = field(default=None, init=False)

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> Any:
        if self.stats.first_token_at is None:
            self.stats.first_token_at = time.perf_counter()
            self.stats.prompt_tokens = len(input_ids)
        if self.cancel.is_set() or self.cancelled:
            self.cancelled = True
            forced = np.full_like(scores, -np.inf)
            forced[self.eos_id] = 0.0
            return forced
        self.stats.tokens_out += 1
        self.on_token()
        if self.bias_ids is not None and self.bias_values is not None:
            scores = scores.copy()
            scores[self.bias_ids] += self.bias_values
        if self.keep_logprobs:
            shifted = scores - scores.max()
            self.logprobs = shifted - np.log(np.exp(shifted).sum())
        return scores


def token_bytes(llama_cpp: Any, vocab: Any, token: int) -> bytes:
    """The bytes of one token (llama-cpp-python's ``token_to_piece`` returns its whole 32-byte buffer)."""
    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        if n >= 0:
            return buf.raw[:n]
        size = -n


class SampledTokens:
    """The tokens a context samples: wraps its ``sample`` (which ``Llama.generate`` calls per token) so the
    generation that listens (:attr:`listener`) learns each token id."""

    def __init__(self, llm: Any) -> None:
        self.listener: Callable[[int], None] | None = None
        original = llm.sample

        def sample(*args: Any, **kwargs: Any) -> int:
            token: int = original(*args, **kwargs)
            if self.listener is not None:
                self.listener(token)
            return token

        llm.sample = sample


@dataclass
class LogprobRecorder:
    """Turns each sampled token and its step's distribution into a :class:`TokenLogprob`."""

    gate: TokenGate
    piece: Callable[[int], bytes]
    top: int
    entries: list[TokenLogprob] = field(default_factory=list)

    def _text(self, token: int) -> tuple[str, list[int]]:
        raw = self.piece(token)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def __call__(self, token: int) -> None:
        logprobs = self.gate.logprobs
        if logprobs is None or self.gate.cancelled:
            return
        top: list[tuple[str, float, list[int]]] = []
        if self.top:
            best = np.argpartition(-logprobs, self.top - 1)[: self.top]
            for i in sorted(best, key=lambda j: -float(logprobs[j])):
                alt_text, alt_raw = self._text(int(i))
                top.append((alt_text, float(logprobs[i]), alt_raw))
        text, raw = self._text(token)
        self.entries.append(TokenLogprob(token=text, logprob=float(logprobs[token]), bytes=raw, top=top))

    def take(self) -> list[TokenLogprob]:
        entries, self.entries = self.entries, []
        return entries
