"""Strict parsing of a JSON request body into a model: 422 ``INVALID_REQUEST`` naming the field (400
``UNSUPPORTED_PARAMETER`` for a field the model does not know or a value it cannot honour)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _field(loc: tuple[int | str, ...], message: str = "") -> str:
    if not loc and ": " in message:  # a model-wide check names its field first (``tool_choice: ...``)
        return message.split(": ", 1)[0]
    return ".".join(str(p) for p in loc) or "body"


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse the JSON body into ``model``; 422 INVALID_REQUEST naming the field (or the JSON error)."""
    return parse_json(await request.body(), model)


def parse_json(raw: bytes, model: type[M]) -> M:
    """Parse JSON ``raw`` into ``model``; 422 INVALID_REQUEST naming the field (or the JSON error)."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except RecursionError as exc:
        raise ApiError(422, ErrorCode.INVALID_REQUEST, "The request body is nested too deeply to be read.") from exc
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
        errors = exc.errors(include_url=False)
        refused = [_field(e["loc"], e["msg"]) for e in errors if e["type"] in _UNSUPPORTED]
        if refused:
            params = list(dict.fromkeys(refused))
            reasons = [_reason(e) for e in errors if e["type"] in _UNSUPPORTED]
            raise ApiError(
                400, ErrorCode.UNSUPPORTED_PARAMETER, "Unsupported parameter(s): " + "; ".join(reasons),
                details={"fields": params}, param=params[0],
            ) from exc
        problems = [(_field(e["loc"]), e["msg"]) for e in errors]
        fields = list(dict.fromkeys(f for f, _ in problems))
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST,
            "Invalid request body: " + "; ".join(f"{f}: {m}" for f, m in problems),
            details={"fields": fields}, param=fields[0] if fields else None,
        ) from exc


#: Pydantic error types of what a model refuses rather than finds malformed: an unknown field, and a value
#: it cannot honour (``openai_requests.UNSUPPORTED``).
_UNSUPPORTED = ("extra_forbidden", "unsupported_parameter")


def _reason(error: Any) -> str:
    field, message = _field(error["loc"], error["msg"]), str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "rbee does not know this parameter (it is refused, not ignored)"
    return message if message.startswith(f"{field}: ") else f"{field}: {message}"
