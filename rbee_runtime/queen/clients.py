"""HTTP clients of the queen: one per kind of peer (hive, worker), sharing one ``httpx.AsyncClient``."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from rbee_runtime.common.contracts import SpawnRequest, WorkerInfo
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError

log = logging.getLogger(__name__)


def api_error_from(response: httpx.Response, peer: str) -> ApiError:
    """Turn a peer's error response (the shared envelope, or anything else) into an :class:`ApiError`."""
    code: str = ErrorCode.UPSTREAM_ERROR
    message = ""
    details: dict[str, Any] = {}
    try:
        body: Any = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
            raw = err.get("details")
            details = raw if isinstance(raw, dict) else {}
    except (ValueError, UnicodeDecodeError):
        pass
    if not message:
        message = f"{peer} answered HTTP {response.status_code}: {response.text[:200]}"
    headers = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else {}
    return ApiError(response.status_code, code, message, details=details, headers=headers)


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
    """Calls a worker's API (relayed completions, cancel)."""

    def __init__(self, http: httpx.AsyncClient, read_timeout_s: float) -> None:
        self._http = http
        self._stream_timeout = httpx.Timeout(read_timeout_s, connect=5.0)

    async def open_completion(self, worker_url: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Start ``POST {worker}{path}`` with the client's ``body`` and the relay ``headers``; the caller reads
        and closes the streamed response.

        Raises :class:`ApiError` when the worker refuses (e.g. 503 ALL_SLOTS_BUSY) and
        ``httpx.HTTPError`` when it cannot be reached.
        """
        req = self._http.build_request(
            "POST", worker_url.rstrip("/") + path, content=body,
            headers={"content-type": "application/json", **headers}, timeout=self._stream_timeout,
        )  # fmt: skip
        response = await self._http.send(req, stream=True)
        if response.status_code != 200:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise api_error_from(response, f"worker {worker_url}")
        return response

    async def cancel(self, worker_url: str, request_id: str) -> None:
        """``DELETE {worker}/v1/requests/{id}`` (best effort: failures are logged, not raised)."""
        try:
            await self._http.delete(
                f"{worker_url.rstrip('/')}/v1/requests/{request_id}", timeout=httpx.Timeout(3.0, connect=2.0)
            )
        except httpx.HTTPError as exc:
            log.info("cancelling %s on %s failed: %s", request_id, worker_url, exc)
