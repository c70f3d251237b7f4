"""How many layers of a model go to the GPU: all when they fit, else as many as fit (partial offload), else none.

Like Ollama, a model that does not fit in the GPU's free memory is split: the first ``n`` layers run
on the GPU, the rest on the CPU. :func:`plan_offload` is a pure function of the facts it is given
(model file size, layer count, context size, slots, free VRAM), so it is tested on recorded numbers;
:func:`read_gguf_shape` reads the layer count and attention shape from a GGUF file's metadata.

The estimate, per slot (llama.cpp loads the weights once per context on the GPU):

- weights: the file size, split evenly over ``layers + 1`` pieces (the repeating layers plus the
  token embedding / output head, which only go to the GPU with the last layer);
- KV cache: ``ctx_size x 4 x n_embd_kv`` bytes per layer (K and V in f16);
- a fixed ``overhead_bytes`` (CUDA context, compute buffers), once per slot, whatever is offloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("rbee.offload")

MIB = 1 << 20
GIB = 1 << 30
#: CUDA context and compute buffers of one llama.cpp context, offloaded or not.
OVERHEAD_BYTES = 512 * MIB
#: ``n_embd_kv`` assumed when the GGUF does not say (a 7B llama without grouped-query attention).
DEFAULT_N_EMBD_KV = 4096
#: Bytes of K plus V per token and per unit of ``n_embd_kv`` (f16 cache).
KV_BYTES_PER_ELEMENT = 4


@dataclass(frozen=True)
class GgufShape:
    """What the offload needs from a GGUF's metadata (None where the file does not say)."""

    architecture: str | None
    layers: int | None
    n_embd: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None

    @property
    def n_embd_kv(self) -> int | None:
        """Width of the K (and of the V) cache per token and layer: ``n_embd x head_count_kv / head_count``."""
        if not self.n_embd:
            return None
        if self.head_count and self.head_count_kv:
            return self.n_embd * self.head_count_kv // self.head_count
        return self.n_embd


def _scalar(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if key == "general.architecture":
        return bytes(value).decode("utf-8", errors="replace")
    return int(value[0]) if len(value) else None


def read_gguf_shape(path: str | Path) -> GgufShape:
    """The layer count (``<arch>.block_count``) and attention shape of a GGUF file.

    Raises ``OSError`` / ``ValueError`` when the file is not a readable GGUF.
    """
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _scalar(reader, "general.architecture")
    if not arch:
        return GgufShape(architecture=None, layers=None)

    def number(name: str) -> int | None:
        value = _scalar(reader, f"{arch}.{name}")
        return int(value) if value is not None else None

    return GgufShape(
        architecture=arch,
        layers=number("block_count"),
        n_embd=number("embedding_length"),
        head_count=number("attention.head_count"),
        head_count_kv=number("attention.head_count_kv"),
    )


def try_read_gguf_shape(path: str | Path) -> GgufShape | None:
    """:func:`read_gguf_shape`, or None (logged) when the file cannot be read as a GGUF."""
    try:
        return read_gguf_shape(path)
    except Exception as exc:
        log.warning("could not read the GGUF metadata of %s (%s): layer count unknown", path, exc)
        return None


@dataclass(frozen=True)
class OffloadPlan:
    """The decision: ``n_gpu_layers`` for llama.cpp (-1 all, 0 none, else that many) and why."""

    n_gpu_layers: int
    layers_total: int | None
    required_bytes: int
    free_bytes: int | None
    reason: str

    @property
    def full(self) -> bool:
        return self.n_gpu_layers == -1

    def describe(self) -> str:
        total = self.layers_total if self.layers_total is not None else "?"
        shown = "all" if self.full else str(self.n_gpu_layers)
        return f"n_gpu_layers={self.n_gpu_layers} ({shown} of {total} layers on the GPU): {self.reason}"


def kv_bytes_per_layer(ctx_size: int, n_embd_kv: int | None) -> int:
    """The KV cache of one layer for a context of ``ctx_size`` tokens (f16)."""
    return ctx_size * KV_BYTES_PER_ELEMENT * (n_embd_kv or DEFAULT_N_EMBD_KV)


def _mib(n: int) -> str:
    return f"{n / MIB:.0f} MiB"


def plan_offload(
    model_size_bytes: int,
    layers: int | None,
    ctx_size: int,
    free_bytes: int | None,
    *,
    slots: int = 1,
    n_embd_kv: int | None = None,
    overhead_bytes: int = OVERHEAD_BYTES,
) -> OffloadPlan:
    """``n_gpu_layers`` for a model of ``layers`` layers on a GPU with ``free_bytes`` free.

    -1 when the whole model, its KV cache and the overhead fit (for every slot); else the number of
    layers that fit next to the overhead; 0 when not one does. Unknown free memory (``None``, e.g. a
    MIG-enabled GPU) or an unknown layer count: -1, and llama.cpp tells (``VRAM_OOM``) if it does not fit.
    """
    slots = max(1, slots)
    kv_layer = kv_bytes_per_layer(ctx_size, n_embd_kv)
    if not layers or layers < 1:
        need = slots * (model_size_bytes + overhead_bytes)
        return OffloadPlan(-1, None, need, free_bytes, "layer count unknown: offloading everything")
    need = slots * (model_size_bytes + layers * kv_layer + overhead_bytes)
    if free_bytes is None:
        return OffloadPlan(-1, layers, need, None, "free VRAM unknown: offloading everything")
    if free_bytes >= need:
        return OffloadPlan(-1, layers, need, free_bytes, f"fits: needs {_mib(need)} of {_mib(free_bytes)} free")
    per_layer = slots * (model_size_bytes // (layers + 1) + kv_layer)
    room = free_bytes - slots * overhead_bytes
    n = max(0, min(layers, room // per_layer)) if room > 0 else 0
    if n == 0:
        reason = (
            f"not one layer fits: {_mib(free_bytes)} free, {_mib(slots * overhead_bytes)} overhead "
            f"+ {_mib(per_layer)} per layer"
        )
    else:
        reason = (
            f"partial: the whole model needs {_mib(need)} but {_mib(free_bytes)} is free; "
            f"{_mib(per_layer)} per layer after {_mib(slots * overhead_bytes)} overhead"
        )
    return OffloadPlan(int(n), layers, need, free_bytes, reason)
