"""Bearer API keys on the public routes (a FastAPI dependency)."""

from __future__ import annotations

import hmac

from fastapi import Request

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_HOW = "Send the header 'Authorization: Bearer <key>' (openai client: OpenAI(api_key=<key>, base_url=...))."


class ApiKeys:
    """The accepted keys; no keys configured means the routes are open."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        """True when keys are required."""
        return bool(self._keys)

    def matches(self, candidate: str) -> bool:
        """Constant-time check of ``candidate`` against every key."""
        given = candidate.encode()
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(given, key)
        return found

    def check(self, authorization: str | None) -> None:
        """Raise 401 MISSING_API_KEY / INVALID_API_KEY unless the Authorization header holds a valid key."""
        if not self.enabled:
            return
        if not authorization or not authorization.strip():
            raise ApiError(
                401, ErrorCode.MISSING_API_KEY, f"This queen requires an API key. {_HOW}", headers=_CHALLENGE
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, ErrorCode.MISSING_API_KEY,
                f"The Authorization header must use the Bearer scheme. {_HOW}", headers=_CHALLENGE,
            )
        if not self.matches(token.strip()):
            raise ApiError(
                401, ErrorCode.INVALID_API_KEY,
                f"The API key is not valid for this queen; check the key you were given. {_HOW}",
                headers=_CHALLENGE,
            )


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: the request carries a valid key (when keys are configured)."""
    keys: ApiKeys = request.app.state.api_keys
    keys.check(request.headers.get("authorization"))
