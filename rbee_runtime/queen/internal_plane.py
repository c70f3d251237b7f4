"""The queen's side of the internal plane: who may send a heartbeat, and what the queen sends its peers.

With a cluster secret (see :mod:`rbee_runtime.common.credentials`), a heartbeat is taken only with the
credential of the hive it names, and every worker it lists must be that hive's and live on that
hive's host: a stranger cannot announce workers, and no hive can send users' prompts elsewhere. The
queen's calls to hives and workers carry the credential of the hive they belong to (:class:`PeerAuth`).
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from rbee_runtime.common.contracts import Heartbeat
from rbee_runtime.common.credentials import bearer, hive_credential, matches, worker_credential
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.registry import Registry, peer_origin

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rbee-internal"'}


class QueenCredentials:
    """Derives the hives' and workers' credentials from the cluster secret (None: the plane is open)."""

    def __init__(self, cluster_secret: str | None) -> None:
        self._secret = cluster_secret
        self._workers: dict[str, str | None] = {}

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def hive(self, hive_id: str) -> str | None:
        """The credential of hive ``hive_id`` (None when the plane is open)."""
        return None if self._secret is None else hive_credential(self._secret, hive_id)

    def workers_of(self, hive_id: str) -> str | None:
        """The credential of the workers of hive ``hive_id`` (None when the plane is open; derived once per hive)."""
        if hive_id not in self._workers:
            cred = self.hive(hive_id)
            if len(self._workers) > 4096:
                self._workers.clear()
            self._workers[hive_id] = None if cred is None else worker_credential(cred)
        return self._workers[hive_id]

    def check_heartbeat(self, authorization: str | None, hive_id: str, what: str = "A heartbeat") -> None:
        """Raise 401/403 unless ``authorization`` carries the credential of hive ``hive_id`` (``what`` needs it)."""
        expected = self.hive(hive_id)
        if expected is None:
            return
        token = bearer(authorization)
        if token is None:
            raise ApiError(
                401, ErrorCode.MISSING_INTERNAL_CREDENTIAL,
                f"{what} needs the hive's credential (Authorization: Bearer); client API keys do not open it.",
                headers=_CHALLENGE,
            )  # fmt: skip
        if not matches(token, expected):
            raise ApiError(
                403, ErrorCode.INVALID_INTERNAL_CREDENTIAL,
                f"The credential is not the one of hive {hive_id!r}: a hive speaks only for itself.",
                {"hive_id": hive_id},
            )  # fmt: skip


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host.lower()
    except (httpx.InvalidURL, TypeError):
        return ""


def check_workers_belong(beat: Heartbeat) -> None:
    """403 ``WORKER_URL_NOT_ON_HIVE`` unless every worker of ``beat`` is the hive's own and on its host."""
    hive_host = _host(beat.url)
    for worker in beat.workers:
        url = httpx.URL(worker.url) if _host(worker.url) else None
        if (
            worker.hive_id != beat.hive_id
            or url is None
            or url.scheme not in ("http", "https")
            or url.host.lower() != hive_host
        ):
            raise ApiError(
                403, ErrorCode.WORKER_URL_NOT_ON_HIVE,
                f"Hive {beat.hive_id!r} lists worker {worker.worker_id!r} at {worker.url!r} (of hive "
                f"{worker.hive_id!r}): a hive may only list its own workers, on its own host {hive_host!r}. "
                "Nothing of this heartbeat was recorded.",
                {"worker_id": worker.worker_id, "url": worker.url, "hive_host": hive_host},
            )  # fmt: skip


class PeerAuth(httpx.Auth):
    """Adds the right credential to the queen's calls: a hive's own for its API, its workers' for theirs."""

    def __init__(self, credentials: QueenCredentials, registry: Registry) -> None:
        self._credentials = credentials
        self._registry = registry

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._credentials.enabled:
            peer = self._registry.peer_at(peer_origin(str(request.url)))
            if peer is not None:
                hive_id, role = peer
                token = self._credentials.hive(hive_id) if role == "hive" else self._credentials.workers_of(hive_id)
                request.headers["Authorization"] = f"Bearer {token}"
        yield request
