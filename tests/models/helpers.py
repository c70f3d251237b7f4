"""Small helpers shared by the model fetch tests."""

from __future__ import annotations

from rbee.spec.models import ModelSpec


def http_model(url: str, sha256: str | None = None, model_id: str = "m1") -> ModelSpec:
    """A model whose source is a plain http URL (the spec only allows https; fetch allows 127.0.0.1)."""
    return ModelSpec.model_construct(id=model_id, source=url, sha256=sha256, context=2048)
