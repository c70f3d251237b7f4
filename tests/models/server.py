"""A small threaded HTTP server on 127.0.0.1 serving model files, with Range support and fault injection."""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-$")
BODY_CHUNK = 64 * 1024


@dataclass
class Served:
    """What one path answers, and the faults to inject."""

    payload: bytes = b""
    status: int | None = None
    """Answer this status (empty body) to every request."""
    fail_first: int = 0
    """Answer ``fail_status`` to the first K requests."""
    fail_status: int = 500
    retry_after: str | None = None
    drop_after: int | None = None
    """Close the connection after this many body bytes ..."""
    drop_times: int = 1
    """... in this many requests."""
    stall_after: int | None = None
    """Stop sending for ``stall_s`` after this many body bytes (first request only)."""
    stall_s: float = 1.5
    ignore_range: bool = False
    slow_s: float = 0.0
    """Spread each body over about this many seconds."""
    etag: str | None = None


@dataclass
class Seen:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    status: int = 0
    bytes_sent: int = 0

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class _State:
    routes: dict[str, Served] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up (dropped, stalled or closed keep-alive connections) are expected: stay quiet."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()})
        with state.lock:
            served = state.routes.get(self.path)
            index = sum(1 for s in state.seen if s.path == self.path)
            state.seen.append(seen)
        try:
            self._answer(served, index, seen)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _empty(self, seen: Seen, status: int, headers: dict[str, str] | None = None) -> None:
        seen.status = status
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, served: Served | None, index: int, seen: Seen) -> None:
        if served is None:
            self._empty(seen, 404)
            return
        if served.status is not None:
            self._empty(seen, served.status)
            return
        if index < served.fail_first:
            headers = {"Retry-After": served.retry_after} if served.retry_after else {}
            self._empty(seen, served.fail_status, headers)
            return
        payload, start = served.payload, 0
        match = _RANGE.match(seen.range or "")
        if match and not served.ignore_range:
            start = int(match.group(1))
            if start >= len(payload):
                self._empty(seen, 416, {"Content-Range": f"bytes */{len(payload)}"})
                return
        body = payload[start:]
        seen.status = 206 if start else 200
        self.send_response(seen.status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if served.etag:
            self.send_header("ETag", served.etag)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.end_headers()
        drop = served.drop_after if index - served.fail_first < served.drop_times else None
        stall = served.stall_after if index == served.fail_first else None
        pause = served.slow_s / max(1, len(body) // BODY_CHUNK)
        sent = 0
        while sent < len(body):
            end = min(len(body), sent + BODY_CHUNK)
            for limit in (drop, stall):
                if limit is not None and sent < limit < end:
                    end = limit
            self.wfile.write(body[sent:end])
            sent = end
            seen.bytes_sent = sent
            if drop is not None and sent >= drop:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if stall is not None and sent == stall:
                self.wfile.flush()
                time.sleep(served.stall_s)
                stall = None
            if pause:
                time.sleep(pause)


class ModelServer:
    """The running server: register paths with :meth:`serve`, read what it received in :attr:`seen`."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, path: str, served: Served) -> str:
        """Serve ``served`` at ``path``; its URL."""
        self._server.state.routes[path] = served
        return self.base + path

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._server.state.lock:
            return [s for s in self._server.state.seen if path is None or s.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def model_server() -> Iterator[ModelServer]:
    """A started :class:`ModelServer`, stopped on exit."""
    server = ModelServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
