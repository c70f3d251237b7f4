"""The public, OpenAI-compatible routes: models, completions, chat completions, embeddings, cancel.

A completion route only parses the body; the request's life is :class:`rbee_runtime.queen.run.RequestRun`'s.
The routes parse their bodies themselves (:func:`parse_body`), so the OpenAPI schema is told about them
(:func:`json_body`): clients and schema-driven fuzzers see the fields and their bounds.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from rbee_runtime.common.openai_requests import EmbeddingRequest, RelayedRequest
from rbee_runtime.queen.auth import require_api_key
from rbee_runtime.queen.http_utils import parse_body
from rbee_runtime.queen.openai_format import ChatCompletionRequest, CompletionRequest
from rbee_runtime.queen.run import CLIENT_REQUEST_ID, RequestRun, client_request_id
from rbee_runtime.queen.scheduler import model_not_found
from rbee_runtime.queen.state import QueenState, get_state

__all__ = ["CLIENT_REQUEST_ID", "client_request_id", "completion_router", "router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["openai"])
#: The completion routes check the API key themselves (see :func:`_run`).
completion_router = APIRouter(prefix="/v1", tags=["openai"])


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` describing a JSON body of ``model`` (its JSON schema, definitions inlined)."""
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def _model(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "rbee"}


@router.get("/models")
async def list_models(state: QueenState = Depends(get_state)) -> dict[str, Any]:
    """Every model an online hive's catalog holds (or an online worker runs), OpenAI style."""
    created = int(time.time())
    return {"object": "list", "data": [_model(m, created) for m in state.registry.models()]}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, state: QueenState = Depends(get_state)) -> dict[str, Any]:
    """One model of :func:`list_models`; 404 ``MODEL_NOT_FOUND`` (``param`` ``model``) for another id."""
    models = state.registry.models()
    if model_id not in models:
        error = model_not_found(model_id, models)
        error.param = "model"
        raise error
    return _model(model_id, int(time.time()))


async def _run(request: Request, model: type[RelayedRequest]) -> Response:
    """Check the key, parse the body, hand the request to its :class:`RequestRun` (no dependency injection:
    this is the hot path, and FastAPI's resolution of dependencies costs more than the rest of the route)."""
    await require_api_key(request)
    state: QueenState = request.app.state.queen
    return RequestRun(state, request, await parse_body(request, model), await request.body())


@completion_router.post("/completions", response_model=None, openapi_extra=json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    """OpenAI text completion (``stream`` true or false)."""
    return await _run(request, CompletionRequest)


@completion_router.post("/chat/completions", response_model=None, openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completion (``stream`` true or false)."""
    return await _run(request, ChatCompletionRequest)


@completion_router.post("/embeddings", response_model=None, openapi_extra=json_body(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    """OpenAI embeddings, from a worker of an embedding model (placed with ``embedding: true``)."""
    return await _run(request, EmbeddingRequest)


@router.delete("/requests/{request_id}", status_code=204, response_class=Response)
async def cancel_request(request_id: str, state: QueenState = Depends(get_state)) -> Response:
    """Cancel a request (queued or running); 204 always."""
    await state.inference.cancel(request_id)
    return Response(status_code=204)
