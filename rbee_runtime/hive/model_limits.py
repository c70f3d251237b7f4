"""What a model's GGUF metadata bounds a spawn by: its trained context and the size of its KV cache.

A spawn asks for ``ctx_size`` tokens in each of ``slots`` contexts; llama.cpp gives every context
its own KV cache (f16 K and V: ``ctx x 4 x n_embd_kv`` bytes per layer, ``ctx`` padded to 256),
while the mmapped weights are shared. The metadata is read once per file version (path, size,
mtime) and kept; read it from a thread, it parses the whole GGUF header.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.offload import GgufShape, kv_bytes_per_layer, try_read_gguf_shape

log = logging.getLogger("rbee.hive.resources")

#: llama.cpp pads a context to a multiple of this many tokens (the worker asks for the padded size).
CTX_PAD = 256


@dataclass(frozen=True)
class ModelLimits:
    """From a GGUF's metadata: the trained context (``n_ctx_train``) and the attention shape (None: unknown)."""

    n_ctx_train: int | None
    shape: GgufShape | None

    def kv_cache_bytes(self, ctx_size: int, slots: int) -> int:
        """RAM the KV caches of ``slots`` contexts of ``ctx_size`` tokens take (0 when the layer count is unknown)."""
        if self.shape is None or not self.shape.layers:
            return 0
        padded = -(-ctx_size // CTX_PAD) * CTX_PAD
        return slots * self.shape.layers * kv_bytes_per_layer(padded, self.shape.n_embd_kv)


def _context_length(path: Path, architecture: str | None) -> int | None:
    if not architecture:
        return None
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get(f"{architecture}.context_length")
        if field is None or not field.data:
            return None
        value = field.parts[field.data[0]]
        return int(value[0]) if len(value) and int(value[0]) > 0 else None
    except Exception as exc:
        log.warning("could not read the trained context of %s (%s)", path, exc)
        return None


@functools.lru_cache(maxsize=64)
def _limits(path: str, _size: int, _mtime_ns: int) -> ModelLimits:
    shape = try_read_gguf_shape(path)
    return ModelLimits(_context_length(Path(path), shape.architecture if shape else None), shape)


def model_limits(path: Path) -> ModelLimits:
    """The limits of the GGUF at ``path`` (unknown ones None, e.g. when the file is not a GGUF)."""
    try:
        stat = path.stat()
    except OSError:
        return ModelLimits(None, None)
    return _limits(str(path), stat.st_size, stat.st_mtime_ns)


def effective_ctx_size(model_id: str, requested: int | None, default: int, limits: ModelLimits) -> int:
    """The context of a new worker: the request's, else the hive's ``ctx_size`` capped at the trained context.

    A request above the trained context is refused: 422 ``INVALID_REQUEST`` naming ``ctx_size``.
    """
    trained = limits.n_ctx_train
    if requested is None:
        if trained is not None and default > trained:
            log.info("hive ctx_size %d is above %s's trained context: using %d", default, model_id, trained)
            return trained
        return default
    if trained is not None and requested > trained:
        raise ApiError(
            422,
            ErrorCode.INVALID_REQUEST,
            f"ctx_size {requested} is larger than the context {model_id!r} was trained for ({trained} tokens); "
            f"ask for at most {trained}.",
            {"field": "ctx_size", "ctx_size": requested, "max_ctx_size": trained, "model_id": model_id},
        )
    return requested
