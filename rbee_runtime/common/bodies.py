"""Strict parsing of a JSON request body into a model: 422 ``INVALID_REQUEST`` naming the field."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse the JSON body into ``model``; 422 INVALID_REQUEST naming the field (or the JSON error)."""
    return parse_json(await request.body(), model)


def parse_json(raw: bytes, model: type[M]) -> M:
    """Parse JSON ``raw`` into ``model``; 422 INVALID_REQUEST naming the field (or the JSON error)."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST,
            f"The request body is not valid JSON ({exc}); send a JSON object with Content-Type: application/json.",
        ) from exc
    if not isinstance(data, dict):
        raise ApiError(422, ErrorCode.INVALID_REQUEST, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(_field(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        fields = list(dict.fromkeys(f for f, _ in problems))
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST,
            "Invalid request body: " + "; ".join(f"{f}: {m}" for f, m in problems),
            details={"fields": fields},
        ) from exc
