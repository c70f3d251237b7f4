"""The one decision about a failed attempt: retry on another worker, answer the client, or end the request.

:func:`classify` maps what an attempt raised (a worker's refusal, an unreachable or silent worker, a
stream broken before or after the first token, a worker's error event) to a :class:`Failure`; the
inference service applies it (:meth:`~rbee_runtime.queen.inference.InferenceService.settle`). The
rules (docs/api.md, "Failover"):

- refused (503 ``ALL_SLOTS_BUSY`` / ``WORKER_LOADING`` / ``WORKER_DRAINING``): retry after a short pause,
  the worker stays routable;
- any other 5xx, unreachable, silent for ``request_timeout_s``, stream broken: retry elsewhere, the
  worker is quarantined — unless tokens already reached the client: then the stream ends with
  ``WORKER_FAILED`` (or ``WORKER_TIMEOUT``);
- a 4xx from the worker (the client's input: invalid, too large, refused by the chat template), or its error
  event: the client's answer, as the worker gave it; the worker stays routable (no quarantine, no failover).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from rbee_runtime.common.contracts import ErrorEvent
from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.generation import WorkerLostError, WorkerReplyError, silence_reason
from rbee_runtime.queen.worker_http import WorkerHttpError, WorkerSilentError

# Worker error codes that are the client's fault (anything else is a 502 from the queen).
_CLIENT_ERROR_CODES: dict[str, int] = {
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorCode.INPUT_REJECTED: 400,
    ErrorCode.UNSUPPORTED_PARAMETER: 400,
    ErrorCode.WRONG_MODEL_TYPE: 400,
    ErrorCode.REQUEST_ID_IN_USE: 409,
}
_REFUSALS = {ErrorCode.ALL_SLOTS_BUSY, ErrorCode.WORKER_LOADING, ErrorCode.WORKER_DRAINING}

#: Where the request was when the attempt failed: opening it and waiting for the first event, generating
#: it (``stream=false``: nothing has reached the client yet), or streaming it (tokens were sent).
Phase = Literal["first_event", "generating", "streaming"]


class Outcome(enum.Enum):
    """What a failed attempt means for its request."""

    RETRY = "retry"  # another worker may do it (the service gives up after max_failover_attempts)
    ANSWER = "answer"  # the request ends with ``Failure.error`` (the client's mistake or the worker's verdict)
    LOST = "lost"  # the worker failed after tokens reached the client: the stream ends with ``Failure.error``


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified."""

    outcome: Outcome
    worker_id: str
    #: For the log and the give-up message (``"<worker>: <reason>"``).
    reason: str
    #: The worker failed (not merely refused): not routed to for ``stale_timeout_s``.
    quarantine: bool = False
    #: A refusal or 5xx answer: pause ``0.1 s * attempts`` before the retry.
    backoff: bool = False
    #: The worker sent nothing for ``request_timeout_s`` (``silent_s``, when known).
    timed_out: bool = False
    silent_s: float | None = None
    #: What the client gets (outcomes ANSWER and LOST).
    error: ApiError | None = None
    #: Not tried again for this request (a quarantined worker, or one that is draining to stop).
    exclude: bool = False


def reply_error(answer: dict[str, Any], worker_id: str) -> WorkerReplyError:
    """The worker's error answer of a relayed ``stream=false`` request (its JSON envelope), as a reply error."""
    error = answer.get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("details")
    fields = details.get("fields") if isinstance(details, dict) else None
    field = str(fields[0]) if isinstance(fields, list) and fields else None
    code = str(error.get("code") or ErrorCode.UPSTREAM_ERROR)
    return WorkerReplyError(worker_id, ErrorEvent(code=code, message=str(error.get("message") or ""), field=field))


def worker_error(event: ErrorEvent, worker_id: str) -> ApiError:
    """The API error for a worker's error event."""
    status = _CLIENT_ERROR_CODES.get(event.code, 502)
    fields = {"fields": [event.field]} if event.field else {}
    return ApiError(status, event.code, event.message, details={"worker_id": worker_id, **fields}, param=event.field)


def worker_timeout(request_id: str, failures: list[str], silent_s: float | None) -> ApiError:
    """504 when the last worker tried stayed silent longer than ``request_timeout_s`` before the first token."""
    return ApiError(
        504,
        ErrorCode.WORKER_TIMEOUT,
        f"The request {request_id} timed out: {silence_reason(silent_s)} before the first token "
        f"({'; '.join(failures)}).",
        details={"request_id": request_id, "request_timeout_s": silent_s, "failures": failures},
    )


def lost_after_tokens(exc: WorkerLostError, tokens: int) -> ApiError:
    """The error chunk of a stream whose worker failed (or fell silent) after ``tokens`` tokens."""
    if exc.timed_out:
        return ApiError(
            504,
            ErrorCode.WORKER_TIMEOUT,
            f"The worker {exc.worker_id} timed out after {tokens} token(s): {exc.reason}; "
            "the request was stopped and the output is incomplete.",
            {"worker_id": exc.worker_id, "tokens": tokens, "request_timeout_s": exc.silent_s},
        )
    return ApiError(
        502,
        ErrorCode.WORKER_FAILED,
        f"The worker {exc.worker_id} failed after {tokens} token(s) ({exc.reason}); the output is incomplete.",
        {"worker_id": exc.worker_id, "tokens": tokens},
    )


#: A worker that refuses the queen's credential is misconfigured (or not the cluster's): never the client's fault.
_CREDENTIAL_REFUSALS = frozenset({ErrorCode.MISSING_INTERNAL_CREDENTIAL, ErrorCode.INVALID_INTERNAL_CREDENTIAL})


def classify(exc: BaseException, worker_id: str, phase: Phase, tokens: int = 0) -> Failure | None:
    """What ``exc``, raised by an attempt on ``worker_id``, means; None: not a worker failure (re-raise it).

    ``tokens``: the tokens already streamed to the client (phase ``streaming``).
    """
    if isinstance(exc, WorkerReplyError):
        return Failure(Outcome.ANSWER, worker_id, exc.event.code, error=worker_error(exc.event, worker_id))
    if isinstance(exc, WorkerLostError):
        if phase == "streaming":
            return Failure(Outcome.LOST, worker_id, f"lost after {tokens} token(s): {exc.reason}", quarantine=True,
                           timed_out=exc.timed_out, silent_s=exc.silent_s, error=lost_after_tokens(exc, tokens))
        when = "before the first token" if phase == "first_event" else "during generation"
        reason = exc.reason if exc.timed_out else f"died {when} ({exc.reason})"
        return Failure(Outcome.RETRY, worker_id, reason, quarantine=True, timed_out=exc.timed_out,
                       silent_s=exc.silent_s)
    if isinstance(exc, ApiError):  # the worker answered the relayed request with an HTTP error
        if exc.code in _REFUSALS:  # a draining worker stops taking requests for good: try the others
            return Failure(Outcome.RETRY, worker_id, exc.code, backoff=True,
                           exclude=exc.code == ErrorCode.WORKER_DRAINING)  # fmt: skip
        if exc.status >= 500 or exc.code in _CREDENTIAL_REFUSALS:  # a refused credential is the cluster's fault
            return Failure(Outcome.RETRY, worker_id, f"{exc.code}: {exc.message}", quarantine=True, backoff=True)
        return Failure(Outcome.ANSWER, worker_id, exc.code, error=exc)
    if isinstance(exc, WorkerSilentError):  # connected, but no answer within request_timeout_s
        return Failure(Outcome.RETRY, worker_id, silence_reason(exc.silent_s), quarantine=True, timed_out=True,
                       silent_s=exc.silent_s)
    if isinstance(exc, WorkerHttpError | httpx.HTTPError):
        return Failure(Outcome.RETRY, worker_id, f"unreachable ({type(exc).__name__})", quarantine=True)
    return None
