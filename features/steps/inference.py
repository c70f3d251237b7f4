"""Steps of inference and cancellation, and the cluster and stream steps other features share.

The shared ones: starting a cluster (the session's shared one, or one of the scenario's own),
a client streaming a completion through the queen and reading it, the worker's counters
(``tokens_generated_total``, ``slots_busy``) and the queen's view of the worker (``in_flight``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from pytest_bdd import given, parsers, then, when

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import Freezer, ProcessPool
from tests.support.services import REQUEST_TIMEOUT_S, Cluster, start_cluster, worker_health, worker_metric
from tests.support.sse import DONE, END, Stream, Streams, completion_body, error_code
from tests.support.waiting import wait_until

# --------------------------------------------------------------------------- helpers


def worker_counters(worker: dict[str, Any]) -> dict[str, int]:
    health = worker_health(worker)
    counters = {k: int(health[k]) for k in ("tokens_generated_total", "requests_cancelled_total", "slots_busy")}
    counters["requests_started_total"] = int(worker_metric(worker, "rbee_worker_requests_started_total"))
    return counters


def open_stream(scene: SimpleNamespace, streams: Streams, cluster: Cluster, body: dict[str, Any],
                path: str = "/completions", headers: dict[str, str] | None = None) -> Stream:  # fmt: skip
    """Start a streamed request through the queen; remember every worker's counters first (unless done)."""
    if not hasattr(scene, "baseline"):
        scene.baseline = {w["worker_id"]: worker_counters(w) for w in cluster.serving(body["model"])}
    scene.max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    scene.stream = streams.open(f"{cluster.api}{path}", body, headers)
    return scene.stream


def serving_worker(cluster: Cluster) -> dict[str, Any]:
    """The worker the queen sent the (one) running request to."""
    return wait_until(
        lambda: next((w for w in cluster.queen.workers() if w["in_flight"] > 0), None),
        5,
        "a worker with a request in flight at the queen",
    )


def wait_generation_stopped(worker: dict[str, Any], within: float) -> dict[str, int]:
    """Wait until the worker has no busy slot; its counters then (final: a generation counts its tokens
    before it frees its slot, so there is no need to wait for them to stand still)."""
    return wait_until(lambda: (c := worker_counters(worker))["slots_busy"] == 0 and c, within,
                      "the worker to stop generating")  # fmt: skip


def ask(cluster: Cluster, model: str = TINY_MODEL_ID, max_tokens: int = 5) -> httpx.Response:
    """A non-streamed completion through the queen."""
    return httpx.post(
        f"{cluster.api}/completions", json=completion_body(max_tokens, model, stream=False), timeout=30, trust_env=False
    )


def stream_end(stream: Stream, timeout: float) -> list[Any]:
    """The events after what was read so far, up to the end of the connection (within ``timeout``)."""
    events = stream.read_to_end(timeout)
    assert events and events[-1] == END, events[-3:]
    return events[:-1]


# --------------------------------------------------------------------------- clusters


@given(parsers.parse('a cluster serving "{model}" on one worker with {slots:d} slots'), target_fixture="cluster")
def shared_cluster_serving(shared_cluster: Cluster, model: str, slots: int) -> Cluster:
    (worker,) = shared_cluster.wait_serving(1, model)
    assert worker["slots_total"] == slots, worker
    return shared_cluster


@given(
    parsers.re(r'a cluster whose hive keeps (?P<count>\d+) workers? of "(?P<model>[^"]+)"'),
    converters={"count": int},
    target_fixture="cluster",
)
def own_cluster(processes: ProcessPool, tiny_model_path: Path, count: int, model: str) -> Cluster:
    assert model == TINY_MODEL_ID
    return start_cluster(processes, tiny_model_path, workers=count)


# --------------------------------------------------------------------------- streaming


@when(parsers.parse("a client streams a completion of {count:d} tokens"))
def client_streams(scene: SimpleNamespace, streams: Streams, cluster: Cluster, count: int) -> None:
    open_stream(scene, streams, cluster, completion_body(count))


@when(parsers.parse('a client streams a completion of {count:d} tokens with the header X-Request-Id "{request_id}"'))
def client_streams_with_id(
    scene: SimpleNamespace, streams: Streams, cluster: Cluster, count: int, request_id: str
) -> None:
    open_stream(scene, streams, cluster, completion_body(count), headers={"X-Request-Id": request_id})
    assert scene.stream.wait_open() == 200, scene.stream.error_body
    assert scene.stream.request_id == request_id


@when(parsers.parse("a client streams a chat completion of {count:d} tokens"))
def client_streams_chat(scene: SimpleNamespace, streams: Streams, cluster: Cluster, count: int) -> None:
    body = {"model": TINY_MODEL_ID, "messages": [{"role": "user", "content": "Tell me about bees"}],
            "max_tokens": count, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    open_stream(scene, streams, cluster, body, "/chat/completions")


@when(parsers.parse("the client has received {count:d} tokens"))
def client_received(scene: SimpleNamespace, cluster: Cluster, count: int) -> None:
    assert scene.stream.wait_open() == 200, scene.stream.error_body
    scene.stream.read_tokens(count)
    scene.worker = serving_worker(cluster)


@when(parsers.parse("the client disconnects after {count:d} tokens"))
def client_disconnects(scene: SimpleNamespace, cluster: Cluster, count: int) -> None:
    client_received(scene, cluster, count)
    scene.stream.disconnect()


@then(parsers.parse(
    'the stream delivers {count:d} chunks of one token each, then the finish reason "{reason}" and [DONE]'
))  # fmt: skip
def stream_delivers(scene: SimpleNamespace, count: int, reason: str) -> None:
    stream_end(scene.stream, 30)
    events = [e for _, e in scene.stream.events if e != END]
    assert events[-1] == DONE
    chunks = [e for e in events if isinstance(e, dict) and e.get("choices")]
    content = [c["choices"][0]["delta"].get("content") for c in chunks]
    tokens = [text for text in content if text]
    assert len(tokens) == count, f"{len(tokens)} token chunks"
    assert all(text.strip() for text in tokens), "a chunk without a token"
    assert chunks[-1]["choices"][0]["finish_reason"] == reason


@then(parsers.parse("the usage counts {count:d} completion tokens"))
def usage_counts(scene: SimpleNamespace, count: int) -> None:
    usage = [e["usage"] for _, e in scene.stream.events if isinstance(e, dict) and e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == count, usage


@then(parsers.parse("the stream completes with {count:d} tokens"))
def stream_completes(scene: SimpleNamespace, count: int) -> None:
    events = stream_end(scene.stream, 60)
    assert events[-1] == DONE, events[-3:]
    assert all(error_code(e) is None for e in events), [e for e in events if error_code(e)]
    assert len(scene.stream.tokens()) == count
    finals = [e for e in events if isinstance(e, dict) and e.get("choices") and e["choices"][0]["finish_reason"]]
    assert finals and finals[-1]["choices"][0]["finish_reason"] == "length", events[-3:]


@then(parsers.parse('the stream ends within {seconds:d} seconds with the error "{code}" followed by [DONE]'))
def stream_ends_with_error(scene: SimpleNamespace, seconds: int, code: str) -> None:
    since = getattr(scene, "incident_at", None) or time.monotonic()
    events = stream_end(scene.stream, seconds + 5)
    ended_at = scene.stream.events[-1][0]
    assert events[-1] == DONE and error_code(events[-2]) == code, events[-3:]
    assert not [e for e in events[:-2] if error_code(e)], events
    assert ended_at - since <= seconds, f"the stream ended {ended_at - since:.1f} s later"
    scene.error = events[-2]["error"]


# --------------------------------------------------------------------------- the worker


@when(parsers.re(r"the worker stops generating within (?P<seconds>\d+) seconds?"), converters={"seconds": int})
@then(parsers.re(r"the worker stops generating within (?P<seconds>\d+) seconds?"), converters={"seconds": int})
def worker_stops(scene: SimpleNamespace, seconds: int) -> None:
    final = wait_generation_stopped(scene.worker, seconds)
    made = final["tokens_generated_total"] - scene.baseline[scene.worker["worker_id"]]["tokens_generated_total"]
    assert made < scene.max_tokens, f"the worker made all {made} tokens: nothing was stopped"


@then("the worker counted one more cancelled request")
def one_more_cancelled(scene: SimpleNamespace) -> None:
    before = scene.baseline[scene.worker["worker_id"]]["requests_cancelled_total"]
    assert worker_counters(scene.worker)["requests_cancelled_total"] == before + 1


@then("the queen holds no request on the worker")
def queen_holds_nothing(scene: SimpleNamespace, cluster: Cluster) -> None:
    worker_id = scene.worker["worker_id"]
    wait_until(
        lambda: (w := cluster.queen.worker(worker_id)) is None or w["in_flight"] == 0,
        3,
        f"the queen to release its slot of {worker_id}",
    )


@when("the worker freezes")
def worker_freezes(scene: SimpleNamespace, freezer: Freezer) -> None:
    freezer.freeze(int(scene.worker["pid"]))
    scene.incident_at = time.monotonic()


@when("the worker resumes")
def worker_resumes(scene: SimpleNamespace, freezer: Freezer) -> None:
    freezer.thaw(int(scene.worker["pid"]))


@when("the worker is killed")
def worker_killed(scene: SimpleNamespace) -> None:
    os.kill(int(scene.worker["pid"]), signal.SIGKILL)
    scene.incident_at = time.monotonic()


@then(parsers.parse("the error says the worker sent nothing for {seconds:g} s (request_timeout_s)"))
def timeout_error_message(scene: SimpleNamespace, seconds: float) -> None:
    assert seconds == REQUEST_TIMEOUT_S
    assert f"sent nothing for {seconds:g} s (request_timeout_s)" in scene.error["message"], scene.error
    assert scene.error["details"]["request_timeout_s"] == seconds


# --------------------------------------------------------------------------- cancelling


def cancel(cluster: Cluster, request_id: str) -> httpx.Response:
    return httpx.delete(f"{cluster.api}/requests/{request_id}", timeout=10, trust_env=False)


@when("the client cancels the request with DELETE /v1/requests/{id}")
def client_cancels(scene: SimpleNamespace, cluster: Cluster) -> None:
    scene.incident_at = time.monotonic()
    scene.response = cancel(cluster, scene.stream.request_id)


@when(parsers.parse('the client cancels "{request_id}" with DELETE /v1/requests/{{id}}'))
def client_cancels_id(scene: SimpleNamespace, cluster: Cluster, request_id: str) -> None:
    scene.response = cancel(cluster, request_id)
    scene.incident_at = time.monotonic()


@then(parsers.parse("the queen answers {status:d}"))
def queen_answers(scene: SimpleNamespace, status: int) -> None:
    assert scene.response.status_code == status, scene.response.text
    assert scene.response.content == b""


@given("every slot of the worker is taken by a long stream")
def slots_taken(scene: SimpleNamespace, streams: Streams, cluster: Cluster) -> None:
    (worker,) = cluster.serving()
    scene.worker = worker
    scene.baseline = {worker["worker_id"]: worker_counters(worker)}
    scene.blockers = [streams.open(f"{cluster.api}/completions", completion_body(1000))
                      for _ in range(worker["slots_total"])]  # fmt: skip
    for blocker in scene.blockers:
        assert blocker.wait_open() == 200, blocker.error_body
        blocker.read_tokens(1)
    assert worker_counters(worker)["slots_busy"] == worker["slots_total"]
    assert cluster.queen.worker(worker["worker_id"])["in_flight"] == worker["slots_total"]  # type: ignore[index]


@given(parsers.parse('a long stream runs with the header X-Request-Id "{request_id}"'))
def long_stream_with_id(scene: SimpleNamespace, streams: Streams, cluster: Cluster, request_id: str) -> None:
    stream = streams.open(f"{cluster.api}/completions", completion_body(1000), {"X-Request-Id": request_id})
    assert stream.wait_open() == 200, stream.error_body
    assert stream.request_id == request_id
    stream.read_tokens(1)
    scene.blockers = [stream]


@when(parsers.parse('a client sends a completion with the header X-Request-Id "{request_id}"'))
def request_with_id(scene: SimpleNamespace, streams: Streams, cluster: Cluster, request_id: str) -> None:
    scene.request_id = request_id
    scene.request = streams.open(f"{cluster.api}/completions", completion_body(50), {"X-Request-Id": request_id})


@then(parsers.parse('the request is refused with {status:d} "{code}"'))
def request_refused(scene: SimpleNamespace, status: int, code: str) -> None:
    assert scene.request.wait_open(10) == status, scene.request.error_body
    assert error_code(scene.request.error_body) == code, scene.request.error_body
    if status == 409:  # a valid id is echoed; the running request keeps it and keeps streaming
        assert scene.request.request_id == scene.request_id
        assert scene.blockers[0].read_tokens(len(scene.blockers[0].tokens()) + 5)


@then("the request waits in the queen's queue")
def request_waits(scene: SimpleNamespace, cluster: Cluster) -> None:
    wait_until(lambda: cluster.queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID) == 1, 5,
               "one request in the queen's queue")  # fmt: skip
    assert not scene.request.opened.is_set(), f"the request was answered: {scene.request.status}"
    assert worker_counters(scene.worker)["slots_busy"] == scene.worker["slots_total"]


@then(parsers.parse('the waiting request ends with HTTP {status:d} "{code}"'))
def waiting_request_ends(scene: SimpleNamespace, status: int, code: str) -> None:
    assert scene.request.wait_open(10) == status, scene.request.error_body
    assert error_code(scene.request.error_body) == code, scene.request.error_body
    assert scene.request.request_id == scene.request_id
    # Answered by the cancel, not by the queue's timeout (queue_timeout_s: 20 s).
    assert time.monotonic() - scene.incident_at < 10, "the cancelled request was not answered at once"


@then("the queen's queue is empty")
def queue_empty(cluster: Cluster) -> None:
    assert cluster.queen.metric("rbee_queen_queue_depth", model=TINY_MODEL_ID) == 0


@when("the long streams are cancelled")
def long_streams_cancelled(scene: SimpleNamespace, cluster: Cluster) -> None:
    for blocker in scene.blockers:
        assert cancel(cluster, blocker.request_id).status_code == 204
        events = stream_end(blocker, 10)
        assert error_code(events[-2]) == "REQUEST_CANCELLED", events[-3:]


@then(parsers.parse('"{request_id}" never reached the worker'))
def never_reached(scene: SimpleNamespace, cluster: Cluster, request_id: str) -> None:
    worker_id = scene.worker["worker_id"]
    # Once the queen holds nothing for the worker and the worker runs nothing, a request the queen had
    # let through would have been counted: no waiting "long enough" for it.
    wait_until(lambda: (cluster.queen.worker(worker_id) or {}).get("in_flight") == 0, 5, "the queen to hold nothing")
    final = wait_generation_stopped(scene.worker, 5)
    started = final["requests_started_total"] - scene.baseline[worker_id]["requests_started_total"]
    assert started == len(scene.blockers), f"the worker started {started} requests, not only the long streams"
    log_path = cluster.hive.data_dir / "logs" / f"{worker_id}.log"
    wait_until(lambda: all(b.request_id in log_path.read_text() for b in scene.blockers), 5,
               "the worker to log the end of every long stream")  # fmt: skip
    assert request_id not in log_path.read_text(), f"{request_id} reached the worker"
