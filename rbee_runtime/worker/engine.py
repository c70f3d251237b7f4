"""The inference engine: llama.cpp (``llama_cpp``) with one ``Llama`` context per slot.

Weights are memory-mapped, so the N contexts of a worker share them; each context owns its KV
cache. A generation is a blocking iterator of text pieces, meant to run in a thread. A per-token
hook (a llama.cpp logits processor, the one callback both the plain and the chat API forward)
counts tokens, adds ``logit_bias``, reads log probabilities and, once the caller's cancel event is set,
forces EOS so the generation stops after at most one more token (:mod:`~rbee_runtime.worker.sampling`).
``response_format`` and forced tool calls are llama.cpp grammars (:mod:`~rbee_runtime.worker.constraints`);
an ``--embedding`` worker embeds instead (:meth:`Engine.embed`).
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rbee_runtime.common.contracts import GenerateRequest, GpuInfo
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.gpus import detect_gpus
from rbee_runtime.common.offload import OffloadPlan
from rbee_runtime.common.pieces import Output, Piece
from rbee_runtime.worker.constraints import Constraint, constraint_for, grammar
from rbee_runtime.worker.gpu import GpuError, classify_load_failure, decide_offload, error_lines
from rbee_runtime.worker.sampling import LogprobRecorder, SampledTokens, TokenGate, token_bytes

log = logging.getLogger(__name__)
llama_log = logging.getLogger("llama.cpp")

#: The last pieces of text llama.cpp logged (its log callback), read when a load fails.
_LLAMA_LOG: deque[str] = deque(maxlen=400)
_LLAMA_LOG_LOCK = threading.Lock()
_llama_log_callback: Any = None
_GGML_LOG_LEVEL_ERROR = 3


def on_llama_log(level: int, text: bytes | None) -> None:
    """llama.cpp's log callback: keep the text (errors also go to the worker's log)."""
    line = (text or b"").decode("utf-8", errors="replace")
    with _LLAMA_LOG_LOCK:
        _LLAMA_LOG.append(line)
    if level == _GGML_LOG_LEVEL_ERROR and line.strip():
        llama_log.warning("%s", line.rstrip())


def recent_llama_log(clear: bool = False) -> str:
    """What llama.cpp logged lately (``clear``: and forget it)."""
    with _LLAMA_LOG_LOCK:
        text = "".join(_LLAMA_LOG)
        if clear:
            _LLAMA_LOG.clear()
    return text


def _capture_llama_log(llama_cpp: Any) -> None:
    """Route llama.cpp's log into :func:`on_llama_log` (once per process; replaces the library's callback,
    which ``import llama_cpp`` installs and which only prints)."""
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    def callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        on_llama_log(level, text)

    _llama_log_callback = llama_cpp.llama_log_callback(callback)  # kept: llama.cpp holds only the pointer
    llama_cpp.llama_log_set(_llama_log_callback, ctypes.c_void_p(0))

Backend = Literal["cpu", "cuda", "metal"]
StopReason = Literal["length", "stop", "cancelled"]

_CTX_PAD = 256


class EngineError(Exception):
    """A generation failed; ``code`` is the stable error code sent to the client (``field``: the request
    field at fault, when the client's input is)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def generation_error(exc: Exception, field: str) -> EngineError:
    """What an exception of llama.cpp's generation means: the client's input (``field``) or the engine's fault.

    Input the model cannot take is the client's: the chat template raised (e.g. roles that do not
    alternate), the text cannot be encoded, or it does not fit the context. Anything else is a fault.
    """
    from jinja2 import TemplateError  # llama-cpp-python renders chat templates with jinja2

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TemplateError):
        return EngineError(ErrorCode.INPUT_REJECTED, f"{field}: the model's chat template refused them ({text})", field)
    if isinstance(exc, UnicodeError):
        return EngineError(ErrorCode.INPUT_REJECTED, f"{field}: the engine cannot encode the text ({text})", field)
    if isinstance(exc, ValueError) and "context window" in str(exc):
        return EngineError(ErrorCode.CONTEXT_LENGTH_EXCEEDED, str(exc), field)
    return EngineError(ErrorCode.GENERATION_FAILED, text)


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs to load a model."""

    model_path: str
    ctx_size: int = 2048
    backend: Backend = "cpu"
    device: int = 0
    threads: int | None = None
    #: ``--n-gpu-layers``: None decides from the GPU's free VRAM (:func:`decide_offload`).
    n_gpu_layers: int | None = None
    #: An embedding model: contexts with embeddings on (:meth:`Engine.embed`), whole inputs in one batch.
    embedding: bool = False


@dataclass
class GenerationStats:
    """Filled in while a generation runs; final once its iterator is exhausted."""

    prompt_tokens: int = 0
    tokens_out: int = 0
    stop_reason: StopReason = "length"
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def decode_ms(self) -> float:
        """Milliseconds from the first sampled token to the end."""
        if self.first_token_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.first_token_at) * 1000.0


def _gguf_chat_template(llama_cpp: Any, llm: Any) -> Callable[..., Any] | None:
    """The formatter llama.cpp renders chats with when it is the GGUF's own Jinja template, else None."""
    template = llm.metadata.get("tokenizer.chat_template")
    if llm.chat_handler is not None or llm.chat_format != "chat_template.default" or not template:
        return None
    eos, bos = llm.token_eos(), llm.token_bos()
    formatter: Callable[..., Any] = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
    return formatter


def _pooling(llama_cpp: Any, model_path: str) -> int:
    """The pooling of an embedding model: the GGUF's own (``<arch>.pooling_type``), else the mean of its tokens."""
    import gguf

    fields = gguf.GGUFReader(model_path).fields
    arch = fields.get("general.architecture")
    name = bytes(arch.parts[arch.data[0]]).decode() if arch is not None else ""
    if f"{name}.pooling_type" in fields:
        return int(llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED)
    return int(llama_cpp.LLAMA_POOLING_TYPE_MEAN)


def _grammar(llama_cpp: Any, llm: Any, constraint: Constraint) -> Any:
    """The grammar of a constraint, parsed once by llama.cpp first: ``EngineError`` INPUT_REJECTED naming its field
    when its schema has none or llama.cpp refuses it (e.g. a ``maxLength`` of thousands, which llama.cpp's parser
    refuses; llama-cpp-python would use the refused grammar and crash the process)."""
    problem = None
    try:
        built = grammar(llama_cpp, constraint)
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        recent_llama_log(clear=True)
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, built._grammar.encode(), built._root.encode())
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
            return built
        lines = [line for line in recent_llama_log().splitlines() if "error" in line][:1]
        problem = f"llama.cpp refused the grammar: {lines[0][:300] if lines else 'parse error'}"
    raise EngineError(ErrorCode.INPUT_REJECTED, f"{constraint.field}: the JSON schema cannot be turned into a "
                      f"grammar ({problem})", constraint.field)  # fmt: skip


class Engine:
    """One model, ``slots`` llama.cpp contexts; ``generate`` runs on the context of one slot."""

    def __init__(
        self, config: EngineConfig, slots: int, detect: Callable[[], list[GpuInfo]] = detect_gpus
    ) -> None:
        self.config = config
        self.slots = slots
        self.detect = detect
        #: The offload decided by ``load`` (None before).
        self.offload: OffloadPlan | None = None
        self._contexts: list[Any] = []
        self._sampled: list[SampledTokens] = []
        #: The model's own chat template as llama.cpp renders it (None: llama.cpp uses a built-in format).
        self._chat_template: Callable[..., Any] | None = None

    @property
    def loaded(self) -> bool:
        return len(self._contexts) == self.slots

    def plan_offload(self, llama_cpp: Any) -> OffloadPlan:
        """How many layers go to the GPU; ``EngineError`` GPU_NOT_AVAILABLE, DEVICE_UNAVAILABLE or VRAM_OOM."""
        cfg = self.config
        try:
            return decide_offload(
                backend=cfg.backend,
                device=cfg.device,
                model_path=cfg.model_path,
                ctx_size=cfg.ctx_size,
                slots=self.slots,
                requested=cfg.n_gpu_layers,
                gpu_offload_supported=cfg.backend == "cpu" or bool(llama_cpp.llama_supports_gpu_offload()),
                gpus=self.detect() if cfg.backend == "cuda" else None,
            )
        except GpuError as exc:
            raise EngineError(exc.code, exc.message) from exc

    def load(self) -> None:
        """Load the model once per slot (blocking); raise ``EngineError`` with the reason on failure.

        Codes: ``ENGINE_MISSING``, ``GPU_NOT_AVAILABLE``, ``DEVICE_UNAVAILABLE``, ``VRAM_OOM`` (also when
        llama.cpp fails to allocate on the GPU), ``CUDA_DEVICE_FAILED``, else ``MODEL_LOAD_FAILED``.
        """
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise EngineError(ErrorCode.ENGINE_MISSING, f"llama-cpp-python is not installed: {exc}") from exc
        _capture_llama_log(llama_cpp)
        cfg = self.config
        self.offload = plan = self.plan_offload(llama_cpp)
        log.info("offload on backend %s (device %d): %s", cfg.backend, cfg.device, plan.describe())
        # llama.cpp pads the context to a multiple of 256; llama-cpp-python sizes its token buffer
        # from the unpadded value and overflows it, so ask for the padded size directly.
        n_ctx = -(-cfg.ctx_size // _CTX_PAD) * _CTX_PAD
        kwargs: dict[str, Any] = {
            "model_path": cfg.model_path,
            "n_ctx": n_ctx,
            "n_batch": min(512, n_ctx),
            "n_gpu_layers": plan.n_gpu_layers,
            "use_mmap": True,
            "n_threads": cfg.threads,
            "n_threads_batch": cfg.threads,
            "verbose": False,
        }
        if cfg.embedding:
            pooling = _pooling(llama_cpp, cfg.model_path)
            kwargs.update(embedding=True, n_batch=n_ctx, n_ubatch=n_ctx, pooling_type=pooling)
        if cfg.backend == "cuda":  # pin the whole model to the one GPU we were given
            kwargs["split_mode"] = llama_cpp.LLAMA_SPLIT_MODE_NONE
            kwargs["main_gpu"] = cfg.device
        for i in range(self.slots):
            recent_llama_log(clear=True)
            try:
                self._contexts.append(llama_cpp.Llama(**kwargs))
            except Exception as exc:
                self.close()
                said = recent_llama_log()
                code = classify_load_failure(cfg.backend, said, str(exc))
                lines = error_lines(said)
                detail = f" (llama.cpp: {' | '.join(lines)})" if lines else ""
                raise EngineError(code, f"{type(exc).__name__}: {exc}{detail}") from exc
            self._sampled.append(SampledTokens(self._contexts[-1]))
            log.info("slot %d/%d: context loaded (n_ctx=%d)", i + 1, self.slots, n_ctx)
        self._chat_template = _gguf_chat_template(llama_cpp, self._contexts[0]) if self._contexts else None

    def check_messages(self, messages: list[dict[str, Any]]) -> None:
        """Render the model's chat template on ``messages`` as a generation will; ``EngineError``
        ``INPUT_REJECTED`` (field ``messages``) when the template refuses them (e.g. ``raise_exception``)."""
        if self._chat_template is None:
            return
        try:
            self._chat_template(messages=messages)
        except Exception as exc:
            message = f"messages: the model's chat template refused them ({type(exc).__name__}: {exc})"
            raise EngineError(ErrorCode.INPUT_REJECTED, message, "messages") from exc

    def close(self) -> None:
        """Free every context."""
        contexts, self._contexts = self._contexts, []
        self._sampled = []
        for ctx in contexts:
            ctx.close()

    def _gate(self, llm: Any, request: GenerateRequest, cancel: threading.Event, stats: GenerationStats,
              on_token: Callable[[], None]) -> TokenGate:  # fmt: skip
        """The per-token hook of a generation; ``EngineError`` INPUT_REJECTED for a token id the model lacks."""
        gate = TokenGate(cancel=cancel, eos_id=llm.token_eos(), stats=stats, on_token=on_token,
                          keep_logprobs=request.logprobs is not None)  # fmt: skip
        if request.logit_bias:
            n_vocab = llm.n_vocab()
            wrong = sorted(t for t in request.logit_bias if not 0 <= t < n_vocab)
            if wrong:
                raise EngineError(ErrorCode.INPUT_REJECTED, f"logit_bias: token id {wrong[0]} is not in the model's "
                                  f"vocabulary (0 to {n_vocab - 1})", "logit_bias")  # fmt: skip
            gate.bias_ids = np.array(list(request.logit_bias), dtype=np.intp)
            gate.bias_values = np.array(list(request.logit_bias.values()), dtype=np.single)
        return gate

    def embed(self, slot: int, texts: list[str]) -> tuple[list[list[float]], int]:
        """The unit-length embedding of each text, and the tokens read; ``EngineError`` CONTEXT_LENGTH_EXCEEDED
        (field ``input``) for a text longer than the context."""
        try:
            vectors, tokens = self._contexts[slot].embed(texts, normalize=True, truncate=False, return_count=True)
        except ValueError as exc:
            if "exceed" not in str(exc):
                raise
            raise EngineError(ErrorCode.CONTEXT_LENGTH_EXCEEDED, f"input: {exc} (the context of this worker)",
                              "input") from exc  # fmt: skip
        return vectors, int(tokens)

    def generate(
        self,
        slot: int,
        request: GenerateRequest,
        cancel: threading.Event,
        stats: GenerationStats,
        on_token: Callable[[], None] = lambda: None,
    ) -> Iterator[Output]:
        """Yield the pieces of one generation on ``slot``; ``stats`` is final at the end.

        Plain text comes as ``str`` pieces; with log probabilities or a tool call as :class:`Piece` objects.
        Raises ``EngineError`` (``CONTEXT_LENGTH_EXCEEDED``, ``INPUT_REJECTED``, ``GENERATION_FAILED``).
        """
        import llama_cpp

        llm = self._contexts[slot]
        gate = self._gate(llm, request, cancel, stats, on_token)
        constraint: Constraint | None = constraint_for(request)
        recorder = None
        if request.logprobs is not None:
            vocab = llm._model.vocab
            recorder = LogprobRecorder(gate, lambda t: token_bytes(llama_cpp, vocab, t), request.logprobs)
        sampled = self._sampled[slot]
        common: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed if request.seed is not None else secrets.randbits(31),
            "stop": list(request.stop),
            "stream": True,
            "logits_processor": llama_cpp.LogitsProcessorList([gate]),
            "frequency_penalty": request.frequency_penalty,
            "presence_penalty": request.presence_penalty,
        }
        finish: str | None = None
        field_name = "prompt" if request.messages is None else "messages"
        if constraint is not None:
            common["grammar"] = _grammar(llama_cpp, llm, constraint)
        sampled.listener = recorder
        try:
            for text, finish_now in self._texts(llm, request, common):
                finish = finish_now or finish
                if constraint is not None and constraint.tool_call:
                    yield from constraint.pieces(text, recorder.take() if recorder else [])
                elif recorder is not None:
                    logprobs = recorder.take()
                    if text or logprobs:
                        yield Piece(text=text, logprobs=logprobs)
                elif text:
                    yield text
            if constraint is not None and constraint.tool_call:
                yield from constraint.finish()
        except EngineError:
            raise
        except Exception as exc:
            raise generation_error(exc, field_name) from exc
        finally:
            sampled.listener = None
            stats.finished_at = time.perf_counter()
        if gate.cancelled:
            stats.stop_reason = "cancelled"
        else:
            stats.stop_reason = "stop" if finish == "stop" else "length"

    def _texts(self, llm: Any, request: GenerateRequest, common: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
        """llama.cpp's stream of one generation: (text, finish reason) per chunk."""
        if request.messages is not None:
            messages = [m.model_dump(exclude_none=True) for m in request.messages]
            self.check_messages(messages)
            for chunk in llm.create_chat_completion(messages=messages, tools=request.tools, **common):
                choice = chunk["choices"][0]
                yield choice.get("delta", {}).get("content") or "", choice.get("finish_reason")
        else:
            for chunk in llm.create_completion(prompt=request.prompt or "", **common):
                choice = chunk["choices"][0]
                yield choice["text"] or "", choice.get("finish_reason")
