"""The seed's failure scenarios, each on real processes: a hive that cannot be reached or answers garbage,
a worker port taken, a worker that cannot start, a worker deaf to SIGTERM, a disk that fills up during a
model download, and a client that gives up while its worker is still loading."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee import __version__
from rbee.models import FetchProgress, ModelFetchError, cache_paths, fetch_model
from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.ports import free_port
from tests.models.helpers import http_model
from tests.models.server import Served, model_server
from tests.support.processes import ProcessPool
from tests.support.services import PY, QueenProc, hive_config, start_hive, start_queen, tiny_model_entry
from tests.support.waiting import pid_alive, wait_until
from tests.support.wire import heartbeat

COMPLETION = {"model": TINY_MODEL_ID, "prompt": "hello", "max_tokens": 4}


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()["error"]
    assert body["code"] == code, body
    return body


def _announce_hive(queen: QueenProc, hive_url: str, hive_id: str = "h-fake") -> None:
    """Tell the queen about a hive holding the tiny model, as that hive's heartbeat would."""
    beat = heartbeat(hive_id, models=[TINY_MODEL_ID], url=hive_url, version=__version__)
    resp = queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"))
    assert resp.status_code == 200, resp.text


# --------------------------------------------------------------------------- the queen's side of a bad hive


class _GarbageHive:
    """A hostile 'hive' on a real port: every spawn gets a 202 whose body is ``body``."""

    def __init__(self, body: bytes) -> None:
        answer = body

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(202)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def queen(processes: ProcessPool) -> QueenProc:
    queen = start_queen(processes)
    queen.wait_healthy()
    return queen


def test_an_unreachable_hive_is_reported_as_hive_unreachable(queen: QueenProc) -> None:
    _announce_hive(queen, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    err = _error(queen.http.post("/v1/completions", json=COMPLETION), 503, "NO_WORKER_AVAILABLE")
    (hive,) = err["details"]["hives"]
    assert hive["hive_id"] == "h-fake" and hive["code"] == "HIVE_UNREACHABLE", hive
    assert "HIVE_UNREACHABLE" in err["message"]
    assert queen.health()["status"] == "ok"


@pytest.mark.parametrize("body", [b"{not json at all", b"[1, 2, 3]", b'{"worker_id": 5}'])
def test_a_hive_answering_malformed_json_is_reported_as_hive_unreachable(queen: QueenProc, body: bytes) -> None:
    fake = _GarbageHive(body)
    try:
        _announce_hive(queen, fake.url)
        err = _error(queen.http.post("/v1/completions", json=COMPLETION), 503, "NO_WORKER_AVAILABLE")
    finally:
        fake.close()
    (hive,) = err["details"]["hives"]
    assert hive["code"] == "HIVE_UNREACHABLE" and "malformed JSON" in hive["message"], hive
    assert queen.health()["status"] == "ok" and queen.workers() == []


# --------------------------------------------------------------------------- worker ports


@pytest.mark.engine
def test_a_worker_port_in_use_is_skipped(processes: ProcessPool, tiny_model_path: Path) -> None:
    first = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        config = hive_config(processes.workdir, "ports", model_path=tiny_model_path, worker_port_first=first,
                             worker_port_last=first + 20)  # fmt: skip
        hive = start_hive(processes, config, wait=True)
        spawned = hive.spawn(TINY_MODEL_ID)
        ready = hive.wait_state(spawned["worker_id"], "idle")
        port = int(ready["url"].rsplit(":", 1)[1])
        assert port != first and first < port <= first + 20
        assert httpx.get(f"{ready['url']}/health", trust_env=False).json()["state"] == "idle"


def test_every_worker_port_in_use_is_refused_clearly(processes: ProcessPool, tiny_model_path: Path) -> None:
    first = free_port()
    with contextlib.ExitStack() as stack:
        for port in (first, first + 1):
            sock = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                sock.listen()
        config = hive_config(processes.workdir, "full", model_path=tiny_model_path, worker_port_first=first,
                             worker_port_last=first + 1)  # fmt: skip
        hive = start_hive(processes, config, wait=True)
        for _ in range(2):  # refused each time, nothing left behind
            err = _error(hive.http.post("/v1/workers", json={"model_id": TINY_MODEL_ID}), 503, "NO_FREE_PORT")
            assert str(first) in err["message"] and "worker_port_last" in err["message"]
        assert hive.workers() == [] and hive.pool.leftovers() == []


# --------------------------------------------------------------------------- workers that cannot start


EXITS_AT_ONCE = "import sys; print('cannot start: the engine library is broken', file=sys.stderr); sys.exit(3)"


def test_a_worker_command_that_exits_at_once_is_worker_spawn_failed(
    processes: ProcessPool, tiny_model_path: Path
) -> None:
    config = hive_config(
        processes.workdir, "exits", model_path=tiny_model_path, worker_command=[PY, "-c", EXITS_AT_ONCE]
    )
    hive = start_hive(processes, config, wait=True)
    wid = hive.spawn(TINY_MODEL_ID)["worker_id"]
    crashed = hive.wait_state(wid, "crashed")
    assert crashed["last_error_code"] == "WORKER_SPAWN_FAILED"
    assert "exited with status 3" in crashed["last_error"]
    assert "cannot start: the engine library is broken" in crashed["last_error"]
    time.sleep(1.0)  # not restarted (it was asked for once, not placed): no crash loop
    assert [w["state"] for w in hive.workers()] == ["crashed"] and hive.pool.leftovers() == []


def test_a_worker_command_that_does_not_exist_is_worker_spawn_failed(
    processes: ProcessPool, tiny_model_path: Path
) -> None:
    config = hive_config(processes.workdir, "nocmd", model_path=tiny_model_path,
                         worker_command=[str(processes.workdir / "no-such-worker")])  # fmt: skip
    hive = start_hive(processes, config, wait=True)
    err = _error(hive.http.post("/v1/workers", json={"model_id": TINY_MODEL_ID}), 500, "WORKER_SPAWN_FAILED")
    assert "no-such-worker" in err["message"]


@pytest.mark.engine
def test_a_corrupt_model_fails_the_request_with_the_reason_from_the_worker_log(processes: ProcessPool) -> None:
    broken = processes.workdir / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 5000)
    queen = start_queen(processes)
    config = hive_config(processes.workdir, "corrupt", queen_url=queen.url, heartbeat_interval_s=0.2,
                         models=[tiny_model_entry(broken)])  # fmt: skip
    hive = start_hive(processes, config, wait=True)
    queen.wait_healthy()
    wait_until(lambda: queen.hives(), timeout=10, what="the hive at the queen")

    started = time.monotonic()
    err = _error(queen.http.post("/v1/completions", json=COMPLETION, timeout=60), 502, "WORKER_SPAWN_FAILED")

    assert time.monotonic() - started < 20, "failed fast, not after loading_timeout_s"
    details = err["details"]
    assert details["last_error_code"] == "MODEL_LOAD_FAILED" and details["hive_id"] == "corrupt"
    assert "load failed [MODEL_LOAD_FAILED]" in err["message"] and "failed to load model" in err["message"]
    assert [w["state"] for w in hive.workers()] == ["crashed"]


# --------------------------------------------------------------------------- a worker deaf to SIGTERM


DEAF_WORKER = """\
import signal, sys, time
def note(*_):
    print("got SIGTERM, ignoring it", flush=True)
signal.signal(signal.SIGTERM, note)
print("deaf worker up", flush=True)
while True:
    time.sleep(0.1)
"""


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(
    processes: ProcessPool, tiny_model_path: Path
) -> None:
    script = processes.workdir / "deaf_worker.py"
    script.write_text(DEAF_WORKER)
    grace = 1.5
    config = hive_config(processes.workdir, "deaf", model_path=tiny_model_path, worker_command=[PY, str(script)],
                         shutdown_grace_s=grace, loading_timeout_s=120)  # fmt: skip
    hive = start_hive(processes, config, wait=True)
    spawned = hive.spawn(TINY_MODEL_ID)
    log = hive.data_dir / "logs" / f"{spawned['worker_id']}.log"
    wait_until(lambda: log.exists() and "deaf worker up" in log.read_text(), timeout=15, what="the deaf worker")

    started = time.monotonic()
    assert hive.http.delete(f"/v1/workers/{spawned['worker_id']}", timeout=30).status_code == 204
    took = time.monotonic() - started

    assert grace <= took < grace + 4, f"stopping took {took:.2f} s (grace {grace} s)"
    assert "got SIGTERM, ignoring it" in log.read_text(), "SIGTERM came first"
    assert not pid_alive(spawned["pid"])
    assert "SIGKILL" in hive.log()
    assert hive.workers() == []


# --------------------------------------------------------------------------- disk full during a download


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (root only), unmounted afterwards, also on failure."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "small-disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_disk_filling_up_during_a_download_keeps_the_partial_file(small_disk: Path) -> None:
    payload = b"GGUF" + os.urandom(3 * 1024 * 1024 - 4)
    filler = small_disk / "other-program.bin"
    filled: list[int] = []

    def fill_the_disk(progress: FetchProgress) -> None:
        """Another program takes all the space left once a first MiB has arrived."""
        if progress.bytes_done >= 1 << 20 and not filled:
            with filler.open("wb") as out, contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            filled.append(progress.bytes_done)

    cache = small_disk / "cache"
    with model_server() as server, httpx.Client(trust_env=False, timeout=10) as http:
        url = server.serve("/m1.gguf", Served(payload, slow_s=1.0))
        model = http_model(url, None)
        with pytest.raises(ModelFetchError) as caught:
            fetch_model(model, cache, http=http, progress=fill_the_disk, retries=0)
        error = caught.value
        assert error.code == "INSUFFICIENT_DISK", error
        assert str(cache) in error.message and "bytes) free" in error.message and "filled up" in error.message
        part = cache_paths(cache, "m1").part
        kept = part.stat().st_size
        assert filled and kept >= 1 << 20 and str(part) in error.hint
        assert part.read_bytes() == payload[:kept], "the partial file holds the bytes received so far"

        filler.unlink()  # space again: the next run resumes where the disk filled up
        got = fetch_model(model, cache, http=http)
        assert server.requests("/m1.gguf")[-1].range == f"bytes={kept}-"
        assert got.path.read_bytes() == payload and not part.exists()


# --------------------------------------------------------------------------- a client gone while its worker loads


def _slow_loading_worker(seconds: float) -> list[str]:
    """A worker command that takes ``seconds`` before the real worker starts (the hive appends the flags)."""
    return ["sh", "-c", f'sleep {seconds}; exec "$0" -m rbee_runtime.worker "$@"', sys.executable]


def _queue_depth(queen: QueenProc) -> float:
    return queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID)


@pytest.mark.engine
def test_a_client_leaving_while_its_worker_loads_leaves_no_waiter(
    processes: ProcessPool, tiny_model_path: Path
) -> None:
    queen = start_queen(processes)
    config = hive_config(processes.workdir, "slow", model_path=tiny_model_path, queen_url=queen.url,
                         heartbeat_interval_s=0.2, worker_command=_slow_loading_worker(4))  # fmt: skip
    hive = start_hive(processes, config, wait=True)
    queen.wait_healthy()
    wait_until(lambda: queen.hives(), timeout=10, what="the hive at the queen")
    outcome: list[BaseException | httpx.Response] = []

    def impatient_client() -> None:
        try:
            outcome.append(httpx.post(f"{queen.url}/v1/completions", json=COMPLETION, timeout=1.5, trust_env=False))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    client = threading.Thread(target=impatient_client)
    client.start()
    wait_until(lambda: _queue_depth(queen) == 1, timeout=5, what="the request waiting for the new worker")
    (loading,) = wait_until(lambda: hive.workers(), timeout=5, what="the worker the queen asked for")
    assert loading["state"] == "loading"
    client.join(timeout=10)
    assert isinstance(outcome[0], httpx.ReadTimeout), outcome

    wait_until(lambda: _queue_depth(queen) == 0, timeout=3, what="the waiter gone from the queue")
    still = hive.worker(loading["worker_id"])
    assert still is not None and still["state"] == "loading", "still loading when the client left"
    hive.wait_state(loading["worker_id"], "idle", timeout=30)

    served = queen.http.post("/v1/completions", json=COMPLETION, timeout=30)
    assert served.status_code == 200, served.text
    assert [w["worker_id"] for w in hive.workers()] == [loading["worker_id"]], "no second worker was started"
    assert _queue_depth(queen) == 0
