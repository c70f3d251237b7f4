"""The ready callback: tell the hive that this worker has loaded its model."""

from __future__ import annotations

import logging

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from rbee_runtime.common.contracts import WorkerReady

log = logging.getLogger(__name__)


def _retryable(exc: BaseException) -> bool:
    """Network errors and 5xx answers are worth a retry; a 4xx answer is final."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def send_ready(url: str, ready: WorkerReady, *, attempts: int = 5, timeout_s: float = 5.0) -> None:
    """POST ``ready`` to ``url``, retrying with exponential back-off; raise after the last attempt."""

    @retry(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    def _post() -> None:
        response = httpx.post(url, json=ready.model_dump(mode="json"), timeout=timeout_s)
        response.raise_for_status()

    _post()
    log.info("ready callback accepted by %s", url)
