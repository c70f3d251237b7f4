"""The one SSE reader of the tests, and a stream read by a thread (events as the server sends them).

Events are the parsed JSON of each ``data:`` payload, and :data:`DONE` for ``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

DONE = "[DONE]"
#: The last event of a :class:`Stream`: the connection closed.
END = "<connection closed>"


def sse_events(lines: Iterable[str]) -> Iterator[Any]:
    """The events of SSE ``lines`` (``response.iter_lines()`` or ``text.splitlines()``), in order."""
    for line in lines:
        if line.startswith("data:"):
            data = line[5:].strip()
            yield DONE if data == DONE else json.loads(data)


def response_events(response: httpx.Response) -> list[Any]:
    """Every event of a streamed answer, read to its end."""
    return list(sse_events(response.iter_lines()))


def token_text(event: Any) -> str | None:
    """The text of an OpenAI chunk (completion or chat), else None."""
    if not isinstance(event, dict):
        return None
    choices = event.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    text = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
    return str(text) if text else None


def error_code(event: Any) -> str | None:
    """The code of an OpenAI-style error event (``{"error": ...}``), else None."""
    if isinstance(event, dict) and isinstance(event.get("error"), dict):
        return str(event["error"].get("code"))
    return None


def completion_body(max_tokens: int, model: str = "rbee-tiny", stream: bool = True) -> dict[str, Any]:
    """A ``/v1/completions`` body."""
    return {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": stream,
            "temperature": 1.0}  # fmt: skip


@contextlib.contextmanager
def open_sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
             timeout: float = 30.0) -> Iterator[tuple[httpx.Response, Iterator[Any]]]:  # fmt: skip
    """POST ``body`` to ``url`` streamed; the response and an iterator of its events (closed on leaving)."""
    with (
        httpx.Client(timeout=timeout, trust_env=False) as http,
        http.stream("POST", url, json=body, headers=headers) as response,
    ):
        yield response, sse_events(response.iter_lines())


def worker_generate(worker_url: str, prompt: str = "hello", max_tokens: int = 4, **extra: Any) -> str:
    """POST a streamed ``/v1/completions`` on a worker and read it to ``[DONE]``; the generated text."""
    body = {"model": "any", "prompt": prompt, "max_tokens": max_tokens, "stream": True, **extra}
    with open_sse(f"{worker_url}/v1/completions", body, timeout=20) as (response, events):
        assert response.status_code == 200, response.read()
        got = list(events)
    assert got and got[-1] == DONE, got[-3:]
    return "".join(text for event in got if (text := token_text(event)) is not None)


class Stream:
    """One streamed POST, read by a thread into a queue: events arrive as the server sends them.

    ``status``/``headers`` once the answer started (``wait_open``); an answer other than 200 is read
    whole into ``error_body``. Events are those of :func:`sse_events`, and finally :data:`END`.
    """

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                 read_timeout: float = 20.0) -> None:  # fmt: skip
        self.url = url
        self.body = body
        self.status: int | None = None
        self.headers: httpx.Headers = httpx.Headers()
        self.error_body: dict[str, Any] | None = None
        self.failure: BaseException | None = None
        self.events: list[tuple[float, Any]] = []
        self.opened = threading.Event()
        self._queue: queue.Queue[tuple[float, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._timeout = httpx.Timeout(read_timeout, connect=5.0)
        self._thread = threading.Thread(target=self._run, args=(headers or {},), daemon=True)
        self._thread.start()

    def _run(self, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(timeout=self._timeout, trust_env=False) as http,
                http.stream("POST", self.url, json=self.body, headers=headers) as response,
            ):
                self.status, self.headers, self._response = response.status_code, response.headers, response
                if response.status_code != 200:
                    response.read()
                    with contextlib.suppress(ValueError):
                        self.error_body = response.json()
                    return
                self.opened.set()
                for event in sse_events(response.iter_lines()):
                    if self._stop.is_set():
                        return
                    self._queue.put((time.monotonic(), event))
        except Exception as exc:  # reported to the step that reads the stream
            self.failure = exc
        finally:
            self.opened.set()
            self._queue.put((time.monotonic(), END))

    # ------------------------------------------------------------------ reading

    def wait_open(self, timeout: float = 20.0) -> int | None:
        """Wait until the answer started (or failed); its HTTP status (None when the request failed)."""
        assert self.opened.wait(timeout), f"no answer from {self.url} within {timeout:g} s"
        return self.status

    @property
    def request_id(self) -> str:
        return str(self.headers["x-request-id"])

    def next_event(self, timeout: float = 20.0) -> Any:
        try:
            at, event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from {self.url} for {timeout:g} s (a hang)") from None
        self.events.append((at, event))
        return event

    def tokens(self) -> list[str]:
        return [text for _, e in self.events if (text := token_text(e)) is not None]

    def read_tokens(self, count: int, timeout: float = 20.0) -> list[str]:
        """Read until ``count`` tokens arrived in all; fails if the stream ends first."""
        deadline = time.monotonic() + timeout
        while len(self.tokens()) < count:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            assert event not in (END, DONE) and error_code(event) is None, (
                f"the stream ended after {len(self.tokens())} token(s): {event!r} (failure: {self.failure!r})"
            )
        return self.tokens()

    def read_to_end(self, timeout: float = 30.0) -> list[Any]:
        """Read every event up to the end of the connection; the events after what was read before."""
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while not self.events or self.events[-1][1] != END:
            self.next_event(max(0.1, deadline - time.monotonic()))
        return [e for _, e in self.events[start:]]

    def ended(self) -> bool:
        return bool(self.events) and self.events[-1][1] == END

    def disconnect(self) -> None:
        """Go away like a client that closes its connection (the reader leaves at the next line)."""
        self._stop.set()
        self._thread.join(timeout=2)
        if self._thread.is_alive() and self._response is not None:  # nothing arrives: close under the reader
            with contextlib.suppress(Exception):
                self._response.close()
            self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the stream reader did not stop"


class Streams:
    """Opens :class:`Stream` s; :meth:`close` disconnects those still open."""

    def __init__(self) -> None:
        self.opened: list[Stream] = []

    def open(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
             read_timeout: float = 20.0) -> Stream:  # fmt: skip
        stream = Stream(url, body, headers, read_timeout)
        self.opened.append(stream)
        return stream

    def close(self) -> None:
        for stream in self.opened:
            with contextlib.suppress(AssertionError):
                stream.disconnect()
