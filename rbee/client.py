"""A small typed client of the queen's API, used by the CLI (``infer``, ``workers ls``, ``top``, ``rbee up``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rbee.deploy.cluster_ca import trust
from rbee_runtime.common.contracts import HiveDeregistered, QueenHive, QueenWorker
from rbee_runtime.common.ports import QUEEN_PORT
from rbee_runtime.queen.dashboard.schema import DashboardState

DEFAULT_QUEEN_URL = f"http://127.0.0.1:{QUEEN_PORT}"


class QueenError(Exception):
    """The queen answered with an error (or not at all); ``code`` is its machine code."""

    def __init__(self, message: str, code: str = "QUEEN_UNREACHABLE", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def queen_url_from_env() -> str:
    """``$RBEE_QUEEN_URL`` or the local default."""
    return os.environ.get("RBEE_QUEEN_URL", DEFAULT_QUEEN_URL).rstrip("/")


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        raise QueenError(error["message"], error.get("code", "ERROR"), response.status_code)
    except (ValueError, KeyError, TypeError):
        raise QueenError(
            f"HTTP {response.status_code}: {response.text[:200]}", "HTTP_ERROR", response.status_code
        ) from None


@dataclass
class StreamedCompletion:
    """A streaming completion in progress: its request id and its text pieces."""

    request_id: str
    pieces: Iterator[str]


class QueenClient:
    """The queen's API: operations views, streaming completions and cancellation."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout_s: float = 10.0,
        ca_file: str | Path | None = None,
    ) -> None:  # fmt: skip
        """``ca_file`` (else ``$RBEE_CA_FILE``): the CA an ``https://`` queen of a ``deploy.tls`` cluster chains to;
        without either, the system's CAs and those of the clusters deployed from this machine
        (``rbee.deploy.cluster_ca.trust``)."""
        self.base_url = (base_url or queen_url_from_env()).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("RBEE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, verify=trust(self.base_url, ca_file)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QueenClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _get(self, path: str) -> Any:
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise QueenError(f"cannot reach the queen at {self.base_url}: {exc}") from exc
        _raise_for(response)
        return response.json()

    def healthy(self) -> bool:
        """True when the queen answers its health check."""
        try:
            return self._http.get("/health", timeout=2.0).is_success
        except httpx.HTTPError:
            return False

    def hives(self) -> list[QueenHive]:
        return [QueenHive.model_validate(h) for h in self._get("/v1/hives")["hives"]]

    def workers(self) -> list[QueenWorker]:
        return [QueenWorker.model_validate(w) for w in self._get("/v1/workers")["workers"]]

    def models(self) -> list[str]:
        return [m["id"] for m in self._get("/v1/models")["data"]]

    def deregister_hive(self, hive_id: str, credential: str | None) -> HiveDeregistered:
        """``DELETE /v1/hives/{hive_id}`` with the hive's ``credential`` (None: the client's API key)."""
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        try:
            response = self._http.delete(f"/v1/hives/{hive_id}", headers=headers)  # a spec host name: no quoting
        except httpx.HTTPError as exc:
            raise QueenError(f"cannot reach the queen at {self.base_url}: {exc}") from exc
        _raise_for(response)
        return HiveDeregistered.model_validate(response.json())

    def dashboard(self) -> DashboardState:
        """The cluster as the dashboard shows it (``GET /ui/api/state``)."""
        return DashboardState.model_validate(self._get("/ui/api/state"))

    def stream_completion(self, model: str, prompt: str, max_tokens: int, temperature: float) -> StreamedCompletion:
        """Start a streaming ``/v1/completions``; iterate ``pieces`` for the text as it is generated."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "stream": True}
        request = self._http.build_request("POST", "/v1/completions", json=body, timeout=httpx.Timeout(10.0, read=None))
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise QueenError(f"cannot reach the queen at {self.base_url}: {exc}") from exc
        if not response.is_success:
            response.read()
            response.close()
            _raise_for(response)
        return StreamedCompletion(response.headers.get("x-request-id", ""), _pieces(response))

    def cancel(self, request_id: str) -> None:
        """Cancel a request (idempotent)."""
        try:
            self._http.delete(f"/v1/requests/{request_id}", timeout=5.0)
        except httpx.HTTPError as exc:
            raise QueenError(f"cannot reach the queen to cancel {request_id}: {exc}") from exc


def _pieces(response: httpx.Response) -> Iterator[str]:
    try:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                raise QueenError(error.get("message", "generation failed"), error.get("code", "ERROR"))
            for choice in chunk.get("choices", []):
                text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                if text:
                    yield text
    finally:
        response.close()
