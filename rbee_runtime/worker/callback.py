"""The ready callback: tell the hive that this worker has loaded its model, and keep telling it.

``send_ready`` is the one-shot callback (a few retries, then give up). ``Announcer`` re-sends the
same ``WorkerReady`` every ``interval_s`` for the worker's whole life, and retries with a back-off
capped at ``interval_s`` while the hive is unreachable, so a worker started before its hive (or a
hive restarted later) always ends up knowing it. Neither ever stops the worker.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from rbee_runtime.common.contracts import WorkerReady
from rbee_runtime.common.tls import TlsFiles, client_options

log = logging.getLogger(__name__)

#: First delay between two failed announces; doubled each time, up to the announce interval.
FIRST_BACKOFF_S = 0.2


def _retryable(exc: BaseException) -> bool:
    """Network errors and 5xx answers are worth a retry; a 4xx answer is final."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def _headers(credential: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def send_ready(
    url: str, ready: WorkerReady, *, credential: str | None = None, attempts: int = 5, timeout_s: float = 5.0,
    tls: TlsFiles | None = None,
) -> None:  # fmt: skip
    """POST ``ready`` to ``url`` (with the workers' ``credential``; with ``tls`` the hive must chain to the
    cluster CA), retrying with exponential back-off; raise after the last attempt."""

    @retry(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    def _post() -> None:
        with httpx.Client(timeout=timeout_s, trust_env=False, headers=_headers(credential), **client_options(tls)) as c:
            response = c.post(url, json=ready.model_dump(mode="json"))
        response.raise_for_status()

    _post()
    log.info("ready callback accepted by %s", url)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.text[:200]}"
    return f"{type(exc).__name__}: {exc}"


class Announcer:
    """POSTs ``ready`` to ``url`` every ``interval_s`` until ``stop`` is set (run it in a thread).

    A failed POST (unreachable hive, any error answer) is retried after ``FIRST_BACKOFF_S``, doubled
    after each failure up to ``interval_s``; the first failure of an outage is logged as a warning,
    the recovery as info, everything else at debug level.
    """

    def __init__(
        self, url: str, ready: WorkerReady, interval_s: float, *, credential: str | None = None, timeout_s: float = 5.0,
        tls: TlsFiles | None = None,
    ) -> None:  # fmt: skip
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0 (0 means a single callback: use send_ready)")
        self.url = url
        self.ready = ready
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.sent = 0
        self._ok: bool | None = None
        #: Since when (wall clock) the hive has not taken a callback, and why (None: it takes them).
        self.failing_since: float | None = None
        self.problem = ""
        self._backoff = FIRST_BACKOFF_S
        options = client_options(tls)
        self._http = httpx.Client(timeout=timeout_s, trust_env=False, headers=_headers(credential), **options)

    def announce_once(self) -> bool:
        """One POST; True when the hive took it. Never raises."""
        try:
            response = self._http.post(self.url, json=self.ready.model_dump(mode="json"))
            response.raise_for_status()
        except Exception as exc:
            if self._ok is not False:
                log.warning(
                    "ready callback to %s failed (%s); the worker keeps serving and retries (at least every %g s)",
                    self.url,
                    _describe(exc),
                    self.interval_s,
                )
            else:
                log.debug("ready callback to %s failed again: %s", self.url, _describe(exc))
            self._ok = False
            self.failing_since = self.failing_since or time.time()
            self.problem = _describe(exc)
            return False
        self.sent += 1
        self.failing_since, self.problem = None, ""
        if self._ok is not True:
            log.info("ready callback accepted by %s (re-sent every %g s)", self.url, self.interval_s)
        self._ok = True
        self._backoff = FIRST_BACKOFF_S
        return True

    def next_delay(self) -> float:
        """Seconds to wait before the next POST: the interval after a success, else the back-off."""
        if self._ok:
            return self.interval_s
        delay = min(self._backoff, self.interval_s)
        self._backoff = min(self._backoff * 2, self.interval_s)
        return delay

    def run(self, first_done: bool | None = None) -> None:
        """Announce until ``stop`` is set. ``first_done``: the outcome of a POST the caller already made."""
        if first_done is not None:
            self._ok = first_done
        try:
            while not self.stop.wait(self.next_delay() if self._ok is not None else 0):
                self.announce_once()
        finally:
            self._http.close()
