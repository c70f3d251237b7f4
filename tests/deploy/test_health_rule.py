"""The one "cluster is ready" rule (``rbee.deploy.health``) on recorded queen lists, and the release record."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rbee.client import QueenError
from rbee.deploy import health
from rbee.deploy.release_record import NOT_FETCHED, release_record_text
from rbee_runtime.common.contracts import QueenHive, QueenWorker
from rbee_runtime.common.ports import free_port as get_free_port
from tests.support.processes import ProcessPool
from tests.support.services import start_worker
from tests.support.stubs import CannedWorker

RESOURCES = {
    "ram_total_bytes": 8 * 2**30,
    "ram_available_bytes": 6 * 2**30,
    "disk_total_bytes": 100 * 2**30,
    "disk_available_bytes": 50 * 2**30,
    "cpu_count": 4,
}


def hive(hive_id: str, status: str = "online", age: float = 0.5) -> QueenHive:
    """One entry of the queen's ``GET /v1/hives``, as recorded from a deploy."""
    return QueenHive.model_validate(
        {
            "hive_id": hive_id,
            "url": f"http://{hive_id}:7835",
            "status": status,
            "last_heartbeat_age_s": age,
            "version": "0.1.0",
            "backends": ["cpu"],
            "models": ["tiny"],
            "max_workers": 4,
            "workers": 1,
            "resources": RESOURCES,
        }
    )


def worker(
    worker_id: str, hive_id: str, state: str = "idle", managed_by: str = "external", url: str | None = None
) -> QueenWorker:
    """One entry of the queen's ``GET /v1/workers``."""
    return QueenWorker.model_validate(
        {
            "worker_id": worker_id,
            "hive_id": hive_id,
            "model_id": "tiny",
            "url": url or f"http://{hive_id}:7840",
            "state": state,
            "started_at": 1.0,
            "last_activity": 2.0,
            "managed_by": managed_by,
            "status": "online",
            "routable": True,
            "in_flight": 0,
        }
    )


class FakeQueen:
    """Answers the rule's two questions from recorded lists (or fails like an unreachable queen)."""

    base_url = "http://queen:7833"

    def __init__(self, hives: list[QueenHive], workers: list[QueenWorker], down: bool = False) -> None:
        self._hives, self._workers, self.down, self.asked = hives, workers, down, 0

    def hives(self) -> list[QueenHive]:
        self.asked += 1
        if self.down:
            raise QueenError("cannot reach the queen at http://queen:7833: ConnectError")
        return self._hives

    def workers(self) -> list[QueenWorker]:
        return self._workers


def test_missing_names_hives_not_online_and_placed_workers_not_ready() -> None:
    hives = [hive("h1"), hive("h2", status="stale")]
    workers = [worker("w3a", "h3"), worker("w3b", "h3", state="loading"), worker("w1", "h1", managed_by="hive")]
    expected = health.Expectation({"h1": 0, "h2": 1, "h3": 2})
    missing = health.missing_in(expected, hives, workers)
    assert missing == "hive h2, hive h3, 1 placed worker(s) on h2, 1 placed worker(s) on h3 (w3b loading)"
    hives = [hive("h1"), hive("h2"), hive("h3")]
    workers[1] = worker("w3b", "h3", state="busy")
    workers.append(worker("w2", "h2"))
    assert health.missing_in(expected, hives, workers) == ""


def test_which_workers_count_is_the_expectations_managed_by() -> None:
    """``rbee up`` places hive-managed workers; a deploy's are systemd units (external)."""
    hives, workers = [hive("here")], [worker("w1", "here", managed_by="hive")]
    assert health.missing_in(health.Expectation({"here": 1}, managed_by="hive"), hives, workers) == ""
    assert health.missing_in(health.Expectation({"here": 1}), hives, workers) == "1 placed worker(s) on here"
    crashed = [worker("w1", "here", state="crashed", managed_by="hive").model_copy(update={"last_error": "OOM"})]
    why = health.missing_in(health.Expectation({"here": 1}, managed_by="hive"), hives, crashed)
    assert why == "1 placed worker(s) on here (w1 crashed: OOM)"


def test_with_since_a_hive_must_have_reported_after_it() -> None:
    expected = health.Expectation({"h1": 0, "h2": 0}, since=1000.0)
    hives = [hive("h1", age=2.0), hive("h2", age=9.0)]  # at 1005: h1 reported at 1003, h2 at 996
    assert health.missing_in(expected, hives, [], now=1005.0) == (
        "hive h2 has not reported since the deploy (is it running?)"
    )
    assert health.missing_in(health.Expectation({"h1": 0, "h2": 0}), hives, []) == ""


def test_missing_asks_the_queen_and_names_it_when_it_does_not_answer() -> None:
    queen = FakeQueen([hive("h1")], [worker("w1", "h1")])
    assert health.missing(queen, health.Expectation({"h1": 1})) == ""
    queen.down = True
    assert health.missing(queen, health.Expectation({"h1": 1})) == (
        "the queen at http://queen:7833 (cannot reach the queen at http://queen:7833: ConnectError)"
    )


def test_serves_streams_a_two_token_completion_from_a_real_worker(
    processes: ProcessPool, tiny_model_path: Path
) -> None:
    real = start_worker(processes, "w1", tiny_model_path)
    real.wait_idle()
    placed = worker("w1", "h1", url=real.url)
    queen = FakeQueen([hive("h1")], [placed])
    with httpx.Client(timeout=30) as http:
        assert health.serves(http, placed) == ""
        assert health.missing(queen, health.Expectation({"h1": 1}, serves=True), http=http) == ""
    assert real.metric("rbee_worker_tokens_generated_total") == 4  # two completions of 2 tokens each


FINISHED = (
    b'data: {"id":"gate","object":"text_completion","choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n'
    b'data: {"id":"gate","object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n'
    b"data: [DONE]\n\n"
)
FAILED = (
    b'data: {"id":"gate","object":"text_completion","choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n'
    b'data: {"error":{"code":"GENERATION_FAILED","message":"decode failed"}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize(
    ("stream", "fail_with", "cut_at", "reason"),
    [
        (
            FINISHED,
            (503, {"error": {"code": "WORKER_LOADING"}}),
            None,
            'HTTP 503 {"error": {"code": "WORKER_LOADING"}}',
        ),
        (FAILED, None, None, 'error chunk: {"error":{"code":"GENERATION_FAILED","message":"decode failed"}}'),
        (FINISHED, None, len(FINISHED) - 20, "RemoteProtocolError: peer closed connection without sending complete"),
        (FINISHED[: -len(b"data: [DONE]\n\n")], None, None, "the stream did not end with data: [DONE]"),
        (FINISHED.split(b"data: {", 2)[0] + FINISHED[-14:], None, None, "no chunk with a finish_reason"),
    ],
    ids=["http-error", "error-chunk", "cut-stream", "no-done", "unfinished"],
)
def test_serves_names_why_a_worker_does_not_serve(
    stream: bytes, fail_with: tuple[int, dict[str, object]] | None, cut_at: int | None, reason: str
) -> None:
    """Over real HTTP (a canned worker): the gate asks ``/v1/completions`` for 2 streamed tokens; says what failed."""
    canned = CannedWorker(stream)
    canned.fail_with, canned.cut_at = fail_with, cut_at
    try:
        placed = worker("w1", "h1", url=canned.url)
        with httpx.Client(timeout=5) as http:
            assert health.serves(http, placed, token="t0k").startswith(reason)
    finally:
        canned.close()
    (asked,) = canned.received
    assert asked["path"] == "/v1/completions" and asked["headers"]["authorization"] == "Bearer t0k"
    assert json.loads(asked["body"]) == {"model": "tiny", "prompt": "ping", "max_tokens": 2, "stream": True}


def test_serves_names_a_worker_nobody_answers_for() -> None:
    placed = worker("w1", "h1", url=f"http://127.0.0.1:{get_free_port()}")
    queen = FakeQueen([hive("h1")], [placed])
    with httpx.Client(timeout=5) as http:
        missing = health.missing(queen, health.Expectation({"h1": 1}, serves=True), http=http)
    assert missing.startswith("worker w1 on h1 does not serve: ConnectError")


def test_wait_ready_polls_until_ready_or_the_timeout() -> None:
    queen = FakeQueen([], [worker("w1", "h1")])
    polls: list[int] = []

    def alive() -> None:
        polls.append(queen.asked)
        if queen.asked == 2:
            queen._hives = [hive("h1")]

    assert health.wait_ready(queen, health.Expectation({"h1": 1}), 5.0, check_alive=alive, interval_s=0.01) == ""
    assert polls == [0, 1, 2]
    assert health.wait_ready(FakeQueen([], []), health.Expectation({"h1": 0}), 0.05, interval_s=0.01) == "hive h1"


def test_check_alive_gives_up_early() -> None:
    def dead() -> None:
        raise RuntimeError("hive exited with status 1")

    with pytest.raises(RuntimeError, match="hive exited"):
        health.wait_ready(FakeQueen([], []), health.Expectation({"h1": 0}), 60.0, check_alive=dead)


def test_cluster_lines_one_per_hive_with_its_workers() -> None:
    lines = health.cluster_lines(
        "http://queen:7833", [hive("h2"), hive("h1", status="stale")], [worker("w1", "h1"), worker("w2", "h1", "busy")]
    )
    assert lines == [
        "rbee cluster at http://queen:7833: 2 hive(s), 2 worker(s)",
        f"{'h1':<16} {'stale':<7} {'http://h1:7835':<28} tiny idle, tiny busy",
        f"{'h2':<16} {'online':<7} {'http://h2:7835':<28} no workers",
    ]


def test_release_record_text_is_inputs_only_and_stable() -> None:
    text = release_record_text("c", "h1", "ab" * 32, "cpu-x", "fp", {"tiny": "cd" * 32, "big": None})
    assert text == (
        '{\n "cluster": "c",\n "engine": "cpu-x",\n "host": "h1",\n'
        ' "models": {\n  "big": "(not fetched: dry run)",\n  "tiny": "' + "cd" * 32 + '"\n },\n'
        ' "spec_sha256": "' + "ab" * 32 + '",\n "wheelhouse": "fp"\n}\n'
    )
    assert json.loads(text)["models"]["big"] == NOT_FETCHED


def test_the_ansible_record_helper_writes_the_same_text(tmp_path: Path) -> None:
    from rbee.cli.ansible_cmd import helpers

    model = {"id": "tiny", "source": f"file://{tmp_path}/tiny.gguf", "context": 512}
    data = {"cluster": "c", "host": "h1", "spec_sha256": "ab", "engine": "cpu-x", "wheelhouse": "fp",
            "models": [model], "cache": str(tmp_path / "cache")}  # fmt: skip
    result = CliRunner().invoke(helpers, ["record"], input=json.dumps(data))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["text"] == release_record_text("c", "h1", "ab", "cpu-x", "fp", {"tiny": None})


def test_a_rollout_batch_expects_fresh_hives_and_serving_deployed_workers() -> None:
    from rbee.rollout.gate import GateTarget, expectation

    expected = expectation([GateTarget("h2", 1), GateTarget("h3", 0)], since=1000.0)
    assert expected == health.Expectation({"h2": 1, "h3": 0}, managed_by="external", since=1000.0, serves=True)
    hives = [hive("h2", age=1.0), hive("h3", age=30.0)]
    assert health.missing_in(expected, hives, [worker("w2", "h2")], now=1010.0) == (
        "hive h3 has not reported since the deploy (is it running?)"
    )
