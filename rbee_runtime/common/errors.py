"""Errors that cross an HTTP boundary: one exception type, one JSON envelope.

Every error response of every rbee service has the OpenAI-compatible shape
``{"error": {"code": "ALL_SLOTS_BUSY", "message": "...", "type": "...", "details": {...}}}``
(with ``param``, the request field at fault, where one is), so the ``openai`` client shows ``message`` and a
person can act on it. The codes, and what each means,
are :class:`~rbee_runtime.common.error_codes.ErrorCode` and its ``DOCS``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rbee_runtime.common.error_codes import ErrorCode


class ApiError(Exception):
    """An error with an HTTP status, a stable machine code and a message for people.

    ``code`` is an :class:`ErrorCode` member, or the code of a peer's error passed on as it came
    (``tests/test_error_codes.py`` refuses a string literal).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON envelope of this error."""
        return error_body(self.code, self.message, self.details, status=self.status, param=self.param)


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "overloaded_error",
    507: "insufficient_resources_error",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None, status: int = 500,
               param: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Build the error envelope (also used inside SSE ``error`` events); ``param``: the request field at fault."""
    err: dict[str, Any] = {"code": code, "message": message, "type": _TYPES.get(status, "server_error")}
    if param is not None:
        err["param"] = param
    if details:
        err["details"] = details
    return {"error": err}


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Make ``ApiError`` and request validation errors answer with the shared envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = f"Invalid request body: {_describe_validation(exc)}"
        return JSONResponse(error_body(ErrorCode.INVALID_REQUEST, message, status=422), status_code=422)
