"""HTTP client from the hive to its workers (health and graceful shutdown)."""

from __future__ import annotations

import logging

import httpx
from pydantic import ValidationError

from rbee_runtime.common.contracts import WorkerHealth
from rbee_runtime.common.tls import TlsFiles, client_options

log = logging.getLogger("rbee.hive.worker_client")


class WorkerClient:
    """One ``httpx.AsyncClient`` for all workers of this hive (short timeouts: they are local), with its credential.

    ``tls``: workers must present a certificate of the cluster CA (and be ``https://``).
    """

    def __init__(self, timeout_s: float = 2.0, credential: str | None = None, tls: TlsFiles | None = None) -> None:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=1.0), trust_env=False, headers=headers, **client_options(tls)
        )

    async def health(self, base_url: str) -> WorkerHealth | None:
        """``GET /health`` of a worker; None when it does not answer (or answers nonsense)."""
        try:
            resp = await self._http.get(f"{base_url}/health")
            resp.raise_for_status()
            return WorkerHealth.model_validate(resp.json())
        except (httpx.HTTPError, ValidationError, ValueError) as exc:
            log.debug("health of %s failed: %s", base_url, exc)
            return None

    async def shutdown(self, base_url: str) -> bool:
        """``POST /v1/shutdown`` (graceful drain); True when the worker accepted it."""
        try:
            resp = await self._http.post(f"{base_url}/v1/shutdown")
            return resp.status_code < 300
        except httpx.HTTPError as exc:
            log.debug("shutdown of %s failed: %s", base_url, exc)
            return False

    async def aclose(self) -> None:
        await self._http.aclose()
