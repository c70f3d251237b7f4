"""JSON logs (``RBEE_LOG_FORMAT=json``): every line of queen, hive and worker is one JSON object, and the lines
of a request carry its id, model and worker on the queen and on the worker (the id travels in ``X-Request-Id``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from tests.support.processes import ProcessPool
from tests.support.services import start_cluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.engine

FIELDS = {"time", "level", "logger", "message", "service"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Each line of a log file as the object it must be (fails naming a line that is not JSON)."""
    objects = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not JSON: {line[:300]}")
        assert isinstance(parsed, dict) and parsed.keys() >= FIELDS, f"{path.name}:{number}: {line[:300]}"
        objects.append(parsed)
    return objects


def test_every_line_is_json_and_a_request_is_followed_from_queen_to_worker(
    processes: ProcessPool, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_LOG_FORMAT", "json")  # the queen and the hive; the hive's worker inherits it
    cluster = start_cluster(processes, tiny_model_path, workers=1, queen={"log_level": "debug"})
    worker_id = cluster.only_worker()["worker_id"]
    for request_id, stream in (("json-logs-whole", False), ("json-logs-stream", True)):
        body = {"model": TINY_MODEL_ID, "prompt": "Bees", "max_tokens": 4, "stream": stream}
        answer = httpx.post(f"{cluster.api}/completions", json=body, headers={"X-Request-Id": request_id}, timeout=30)
        assert answer.status_code == 200, answer.text
    worker_log = Path(cluster.hive.config["data_dir"]) / "logs" / f"{worker_id}.log"

    def request_lines(path: Path, request_id: str) -> list[dict[str, Any]]:
        return [line for line in json_lines(path) if line.get("request_id") == request_id]

    for request_id in ("json-logs-whole", "json-logs-stream"):
        queen_log = cluster.queen.proc.log_path
        on_worker = wait_until(functools.partial(request_lines, worker_log, request_id), 10, f"{request_id}: worker")
        on_queen = wait_until(functools.partial(request_lines, queen_log, request_id), 10, f"{request_id}: queen")
        for line in on_worker + on_queen:
            assert line["model"] == TINY_MODEL_ID and line["worker"] == worker_id, line
        assert {line["service"] for line in on_worker} == {"worker"}
        assert {line["service"] for line in on_queen} == {"queen"}
        assert any(f"request {request_id}: " in line["message"] for line in on_worker), on_worker
    hive_lines = json_lines(cluster.hive.proc.log_path)
    assert {line["service"] for line in hive_lines} == {"hive"}
    assert not [line for line in hive_lines if "request_id" in line]  # nothing of a request on the hive's lines
    workers_lines = json_lines(worker_log)
    assert all(line.get("worker") == worker_id for line in workers_lines if line["service"] == "worker")
    assert any(line["message"].startswith("hive starts: ") for line in workers_lines)  # the hive's line, JSON too
