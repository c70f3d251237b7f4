"""The queen's HTTP/1.1 client for relayed completions: asyncio transports, httptools' parser, kept-alive.

Every relayed request is one ``POST`` to a worker and the bytes of its answer, as they arrive. That path
is measured per token (bench/), so it runs on the event loop's own transports with httptools' C parser
(a dependency of the services' uvicorn) instead of httpx's layers: one write per request, no task or
cancel scope per read (a read timeout is one timer, armed only while the reader waits). Connections are
kept per worker origin and reused while fresh (:data:`IDLE_S`, below uvicorn's keep-alive timeout);
a reused connection that closes before any answer byte is retried once on a new one. Everything else
the queen sends peers (cancels, hive calls) goes through httpx.

Why not a library: measured in the same runs (bench/proxy, canned worker, 2026-12), httpx added ~1 ms per
request; aiohttp's client (a drop-in passing the same tests) added +0.3 ms to first token with paced tokens,
+12% queen CPU per token, and 23% fewer tokens/s at 32 streams. Both parse with C, neither beats one
write per request and a parser fed straight from the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast

import httptools

#: Seconds an idle connection is reused (uvicorn closes one after 5 s by default).
IDLE_S: Final = 4.0
#: Idle connections kept per worker.
MAX_IDLE: Final = 32
#: Answer bytes buffered before the worker's connection stops being read (flow control).
_HIGH_WATER: Final = 256 * 1024


class WorkerHttpError(Exception):
    """A relayed request failed at the HTTP level (the worker unreachable, gone, or speaking nonsense)."""


class WorkerConnectError(WorkerHttpError):
    """The worker could not be reached (refused, unresolvable, TLS failed, connect timeout)."""


class WorkerSilentError(WorkerHttpError):
    """The worker sent nothing for ``silent_s`` seconds."""

    def __init__(self, message: str, silent_s: float) -> None:
        super().__init__(message)
        self.silent_s = silent_s


class WorkerProtocolError(WorkerHttpError):
    """The connection closed before the answer ended, or the answer is not HTTP."""


@dataclass(frozen=True)
class Origin:
    """Where a worker listens."""

    https: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Origin:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise WorkerConnectError(f"not an http(s) URL: {url!r}")
        hostport = rest.split("/", 1)[0]
        host, port = hostport, "443" if scheme == "https" else "80"
        if hostport.startswith("["):  # [ipv6]:port
            host, _, tail = hostport[1:].partition("]")
            port = tail.removeprefix(":") or port
        elif ":" in hostport:
            host, port = hostport.rsplit(":", 1)
        if not host or not port.isdigit():
            raise WorkerConnectError(f"not an http(s) URL: {url!r}")
        return cls(scheme == "https", host, int(port))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; answers are parsed as they arrive and read with :meth:`next_body`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.done = False
        self.got_bytes = False
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: WorkerHttpError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(WorkerProtocolError(f"the answer is not HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.done:
            why = f": {exc}" if exc else ""
            self._fail(WorkerProtocolError(f"the connection closed before the answer ended{why}"))

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        self._wake()

    # ------------------------------------------------------------------ the reader's side

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: WorkerHttpError) -> None:
        self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def _wait(self, timeout: float) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._time_out, waiter, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    @staticmethod
    def _time_out(waiter: asyncio.Future[None], timeout: float) -> None:
        if not waiter.done():
            waiter.set_exception(WorkerSilentError(f"no answer for {timeout:g} s", timeout))

    def send(self, request: bytes) -> None:
        """Start a request (the previous answer was read to its end)."""
        self._reset()
        assert self.transport is not None
        self.transport.write(request)

    async def head(self, timeout: float) -> None:
        """Wait for the answer's status and headers."""
        while not self.head_done:
            await self._wait(timeout)

    async def next_body(self, timeout: float) -> bytes:
        """The answer's next bytes (all those that arrived), waiting up to ``timeout`` for some; b"" at its end."""
        while not self._body:
            if self.done:
                return b""
            await self._wait(timeout)
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class WorkerAnswer:
    """An answer being read: ``status``, ``headers``, its body with :meth:`read` / :meth:`read_all`."""

    def __init__(self, pool: WorkerHttp, origin: Origin, conn: _Connection, read_timeout: float) -> None:
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self.read_timeout = read_timeout
        self.status = conn.status
        self.headers = conn.headers
        self._closed = False

    def header(self, name: bytes) -> str | None:
        """The value of header ``name`` (lower case), if the answer has it."""
        return next((v.decode("latin-1") for k, v in self.headers if k == name), None)

    async def read(self) -> bytes:
        """The next bytes of the body (b"" at its end); :class:`WorkerSilentError`, :class:`WorkerProtocolError`."""
        return await self._conn.next_body(self.read_timeout)

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        """Done with the answer: its connection goes back to the pool when the answer was read to its end."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn.done and not conn.closed and self.header(b"connection") != "close":
            self._pool.release(self._origin, conn)
        else:
            conn.close()


class WorkerHttp:
    """Kept-alive connections to workers (``ssl_context``: the cluster CA; then plain ``http://`` is refused)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, connect_timeout_s: float = 5.0) -> None:
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        #: Connections opened (tests count them).
        self.connections_opened = 0

    def _origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = Origin.parse(url)
            if self._ssl is not None and not origin.https:
                raise WorkerConnectError(f"refused to call {origin.host_header} over plain HTTP: this cluster's "
                                         "internal plane uses TLS (https:// only)")  # fmt: skip
            if len(self._origins) > 4096:
                self._origins.clear()
            self._origins[url] = origin
        return origin

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        context = self._ssl if origin.https else None
        if origin.https and context is None:
            context = ssl.create_default_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), origin.host, origin.port, ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )  # fmt: skip
        except TimeoutError as exc:
            took = f"connecting to {origin.host_header} took over {self._connect_timeout:g} s"
            raise WorkerConnectError(took) from exc
        except (OSError, ssl.SSLError) as exc:
            raise WorkerConnectError(f"cannot connect to {origin.host_header}: {exc}") from exc
        self.connections_opened += 1
        return conn

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    def release(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def post(self, url: str, path: str, body: bytes, headers: Mapping[str, str],
                   read_timeout_s: float) -> WorkerAnswer:  # fmt: skip
        """``POST {url}{path}``; the answer once its head arrived (read its body, then :meth:`WorkerAnswer.close`).

        Raises :class:`WorkerConnectError`, :class:`WorkerSilentError` (no head within ``read_timeout_s``) and
        :class:`WorkerProtocolError`.
        """
        origin = self._origin(url)
        lines = [f"POST {path} HTTP/1.1", f"host: {origin.host_header}", f"content-length: {len(body)}",
                 *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        conn = self._take_idle(origin)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(origin)
            conn.send(request)
            try:
                await conn.head(read_timeout_s)
            except WorkerProtocolError:
                conn.close()
                if reused and not conn.got_bytes:  # closed by the worker while idle: once more, anew
                    conn, reused = None, False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return WorkerAnswer(self, origin, conn, read_timeout_s)

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.close()
        self._idle.clear()
