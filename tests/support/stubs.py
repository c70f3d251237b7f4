"""Stand-in servers: small real HTTP servers in the test process that record what services POST to them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingServer:
    """Records every JSON body POSTed to ``paths`` (others: 404) and answers ``{}`` once ``release`` is set.

    Each record has ``path``, ``body``, ``headers`` (lower-case names) and ``at`` (monotonic time).
    ``port``: listen there (0: a free port).
    """

    def __init__(self, paths: set[str], port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()  # answer only once set (set by default)
        self.release.set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                known = self.path in paths
                if known:
                    record = {"path": self.path, "body": json.loads(body), "at": time.monotonic(),
                              "headers": {k.lower(): v for k, v in self.headers.items()}}  # fmt: skip
                    with server._lock:
                        server.received.append(record)
                    server.arrived.set()
                    server.release.wait(10)
                self.send_response(200 if known else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> list[dict[str, Any]]:
        """The bodies received so far, oldest first."""
        with self._lock:
            return [r["body"] for r in self.received]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class QueenStub(RecordingServer):
    """Stands in for the queen: records every heartbeat a hive sends."""

    def __init__(self) -> None:
        super().__init__({"/v1/hives/heartbeat"})
        self.url = self.base_url

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return [r["headers"] for r in self.received]

    def find(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The newest heartbeat for which ``pred`` holds."""
        return next((b for b in reversed(self.snapshot()) if pred(b)), None)

    def worker_states(self, worker_id: str) -> list[str]:
        """States of ``worker_id`` in the order the heartbeats reported them (consecutive duplicates merged)."""
        states: list[str] = []
        for beat in self.snapshot():
            for w in beat["workers"]:
                if w["worker_id"] == worker_id and (not states or states[-1] != w["state"]):
                    states.append(w["state"])
        return states


class CallbackReceiver(RecordingServer):
    """Stands in for the hive's ready endpoint (``url``): records every ready callback of a worker."""

    def __init__(self, port: int = 0) -> None:
        super().__init__({"/v1/workers/ready"}, port)
        self.url = f"{self.base_url}/v1/workers/ready"


class CannedWorker:
    """Stands in for a worker's relayed OpenAI routes: real HTTP/1.1 with keep-alive, canned answer bytes.

    Answers ``POST /v1/completions`` and ``/v1/chat/completions`` with ``stream`` (a streamed request) or
    ``whole`` (``stream=false``), and ``DELETE /v1/requests/{id}`` with 204. Records each request (``path``,
    ``body`` bytes, lower-case ``headers``) and counts the TCP connections it accepted (``connections``).
    ``refuse``: answer the next that many POSTs 503 ``ALL_SLOTS_BUSY``; ``fail_with``: answer every POST with
    that status and JSON body; ``cut_at``: send only that many bytes of the answer, then close the connection
    (a worker that died).
    """

    def __init__(self, stream: bytes, whole: bytes = b"{}") -> None:
        self.stream = stream
        self.whole = whole
        self.refuse = 0
        self.cut_at: int | None = None
        self.fail_with: tuple[int, dict[str, Any]] | None = None
        self.received: list[dict[str, Any]] = []
        self.deletes: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        worker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with worker._lock:
                    worker.connections += 1

            def do_DELETE(self) -> None:
                with worker._lock:
                    worker.deletes.append(self.path.rsplit("/", 1)[-1])
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with worker._lock:
                    worker.received.append({"path": self.path, "body": body,
                                            "headers": {k.lower(): v for k, v in self.headers.items()}})  # fmt: skip
                    refused, worker.refuse = worker.refuse > 0, max(0, worker.refuse - 1)
                if refused:
                    answer = b'{"error": {"code": "ALL_SLOTS_BUSY", "message": "busy"}}'
                    self._send(503, answer, "application/json")
                    return
                if worker.fail_with is not None:
                    status, error = worker.fail_with
                    self._send(status, json.dumps(error).encode(), "application/json")
                    return
                streamed = json.loads(body).get("stream", False)
                answer = worker.stream if streamed else worker.whole
                self._send(200, answer, "text/event-stream" if streamed else "application/json")

            def _send(self, status: int, answer: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                if status == 200 and worker.cut_at is not None:
                    self.wfile.write(answer[: worker.cut_at])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
