"""Authentication of the internal endpoints of hives and workers (a FastAPI dependency).

A service started with a credential accepts only requests carrying it (``Authorization: Bearer``); each
route says which credentials it takes (a hive's routes take the hive's credential, its
``/v1/workers/ready`` also its workers' one). A service started without one is open, which its config
allows only on a loopback address (see :mod:`rbee_runtime.common.credentials`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import Request

from rbee_runtime.common.credentials import bearer, matches
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rbee-internal"'}


class InternalAuth:
    """The credentials a service accepts, by role (``hive``, ``worker``); none: the service is open."""

    def __init__(self, credentials: Mapping[str, str] | None = None) -> None:
        self._credentials = dict(credentials or {})

    @property
    def enabled(self) -> bool:
        return bool(self._credentials)

    def check(self, authorization: str | None, roles: tuple[str, ...]) -> None:
        """Raise 401/403 unless ``authorization`` carries the credential of one of ``roles``."""
        if not self.enabled:
            return
        token = bearer(authorization)
        if token is None:
            raise ApiError(
                401, ErrorCode.MISSING_INTERNAL_CREDENTIAL,
                "This internal endpoint needs the cluster's internal credential (Authorization: Bearer); "
                "client API keys do not open it.",
                headers=_CHALLENGE,
            )  # fmt: skip
        found = False
        for role in roles:
            expected = self._credentials.get(role)
            found |= expected is not None and matches(token, expected)
        if not found:
            raise ApiError(
                403, ErrorCode.INVALID_INTERNAL_CREDENTIAL,
                "The credential is not valid for this internal endpoint.",
            )  # fmt: skip


def require(*roles: str) -> Callable[[Request], Awaitable[None]]:
    """FastAPI dependency: the request carries the credential of one of ``roles`` (``app.state.internal_auth``)."""

    async def dependency(request: Request) -> None:
        auth: InternalAuth = request.app.state.internal_auth
        auth.check(request.headers.get("authorization"), roles)

    return dependency
