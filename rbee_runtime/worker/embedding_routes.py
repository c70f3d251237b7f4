"""The worker's ``POST /v1/embeddings`` (a worker started with ``--embedding``): OpenAI's embeddings answer.

The body is validated with the queen's model (:class:`~rbee_runtime.common.openai_requests.EmbeddingRequest`);
the texts are embedded on a free slot in one call (unit-length vectors), as floats or, with
``encoding_format: base64`` (what the ``openai`` client asks for by default), as little-endian float32 bytes.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from rbee_runtime.common import log_context
from rbee_runtime.common.bodies import parse_json
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.common.internal_auth import InternalAuth
from rbee_runtime.common.openai_requests import EmbeddingRequest
from rbee_runtime.common.relay import REQUEST_ID, REQUEST_ID_HEADER
from rbee_runtime.worker.engine import EngineError
from rbee_runtime.worker.service import WorkerService


def wrong_model_type(model: str, embedding: bool) -> ApiError:
    """400 ``WRONG_MODEL_TYPE``: an embedding model asked for a completion, or another model for embeddings."""
    if embedding:
        message = f"The model {model!r} is an embedding model: it answers POST /v1/embeddings only."
    else:
        message = (f"The model {model!r} does not serve embeddings (an embedding model is placed with "
                   "'embedding: true').")  # fmt: skip
    return ApiError(400, ErrorCode.WRONG_MODEL_TYPE, message, param="model")


def _vector(values: list[float], encoding: str | None) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")
    return values


def add_embedding_routes(app: FastAPI, service: WorkerService) -> None:
    """Add ``POST /v1/embeddings`` to a worker's app (internal credential checked here, as the OpenAI routes do)."""
    auth: InternalAuth = app.state.internal_auth

    async def embeddings(request: Request) -> Response:
        auth.check(request.headers.get("authorization"), ("worker",))
        if (chosen := request.headers.get(REQUEST_ID_HEADER)) and REQUEST_ID.fullmatch(chosen):
            log_context.bind(request_id=chosen)  # the queen's id of the request, in this request's log lines
        body = parse_json(await request.body(), EmbeddingRequest)
        if not service.engine.config.embedding:
            raise wrong_model_type(body.model, embedding=False)
        try:
            vectors, tokens = await service.embed(body.texts)
        except EngineError as exc:
            raise ApiError(400 if exc.field else 500, exc.code, exc.message, param=exc.field) from exc
        data = [{"object": "embedding", "index": i, "embedding": _vector(v, body.encoding_format)}
                for i, v in enumerate(vectors)]  # fmt: skip
        answer = {"object": "list", "data": data, "model": body.model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
        return JSONResponse(answer)

    app.add_route("/v1/embeddings", embeddings, methods=["POST"])
