"""HTTP clients of the queen: one per kind of peer (hive, worker), sharing one ``httpx.AsyncClient``
(relayed completions: :mod:`rbee_runtime.queen.worker_http`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.worker_http import WorkerAnswer, WorkerHttp

log = logging.getLogger(__name__)


def api_error_from(response: httpx.Response, peer: str) -> ApiError:
    """Turn a peer's error response (the shared envelope, or anything else) into an :class:`ApiError`."""
    code: str = ErrorCode.UPSTREAM_ERROR
    message = ""
    details: dict[str, Any] = {}
    param: str | None = None
    try:
        body: Any = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
            raw = err.get("details")
            details = raw if isinstance(raw, dict) else {}
            param = err.get("param") if isinstance(err.get("param"), str) else None
    except (ValueError, UnicodeDecodeError):
        pass
    if not message:
        message = f"{peer} answered HTTP {response.status_code}: {response.text[:200]}"
    headers = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else {}
    return ApiError(response.status_code, code, message, details=details, headers=headers, param=param)


class HiveClient:
    """Calls a hive's API (spawn and list workers)."""

    def __init__(self, http: httpx.AsyncClient, timeout_s: float = 10.0) -> None:
        self._http = http
        self._timeout = httpx.Timeout(timeout_s, connect=5.0)

    async def spawn_worker(self, hive_url: str, request: SpawnRequest) -> WorkerInfo:
        """``POST {hive}/v1/workers`` → the new worker (state ``loading``)."""
        response = await self._http.post(
            f"{hive_url.rstrip('/')}/v1/workers",
            json=request.model_dump(mode="json", exclude_none=True),
            timeout=self._timeout,
        )
        if response.status_code >= 400:
            raise api_error_from(response, f"hive {hive_url}")
        return WorkerInfo.model_validate(response.json())

    async def list_workers(self, hive_url: str) -> list[WorkerInfo]:
        """``GET {hive}/v1/workers``."""
        response = await self._http.get(f"{hive_url.rstrip('/')}/v1/workers", timeout=self._timeout)
        if response.status_code >= 400:
            raise api_error_from(response, f"hive {hive_url}")
        return [WorkerInfo.model_validate(w) for w in response.json().get("workers", [])]


class WorkerClient:
    """Calls a worker's API: relayed completions (:class:`WorkerHttp`, kept-alive), cancels (httpx)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        read_timeout_s: float,
        relay: WorkerHttp | None = None,
        credential_of: Callable[[str], str | None] = lambda hive_id: None,
    ) -> None:
        self._http = http
        self.read_timeout_s = read_timeout_s
        self.relay = relay or WorkerHttp()
        self._credential_of = credential_of

    async def open_completion(self, worker_url: str, hive_id: str, path: str, body: bytes,
                              headers: dict[str, str]) -> WorkerAnswer:  # fmt: skip
        """Start ``POST {worker}{path}`` with the client's ``body`` and the relay ``headers`` (and the credential
        of the workers of ``hive_id``); the caller reads and closes the answer.

        Raises :class:`ApiError` when the worker refuses (e.g. 503 ALL_SLOTS_BUSY) and
        :class:`~rbee_runtime.queen.worker_http.WorkerHttpError` when it cannot be reached or fails.
        """
        token = self._credential_of(hive_id)
        sent = {"content-type": "application/json", **headers}
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        answer = await self.relay.post(worker_url.rstrip("/"), path, body, sent, self.read_timeout_s)
        if answer.status != 200:
            try:
                content = await answer.read_all()
            finally:
                answer.close()
            refusal = httpx.Response(answer.status, headers=answer.headers, content=content)
            raise api_error_from(refusal, f"worker {worker_url}")
        return answer

    async def cancel(self, worker_url: str, request_id: str) -> None:
        """``DELETE {worker}/v1/requests/{id}`` (best effort: failures are logged, not raised)."""
        try:
            await self._http.delete(
                f"{worker_url.rstrip('/')}/v1/requests/{request_id}", timeout=httpx.Timeout(3.0, connect=2.0)
            )
        except httpx.HTTPError as exc:
            log.info("cancelling %s on %s failed: %s", request_id, worker_url, exc)
