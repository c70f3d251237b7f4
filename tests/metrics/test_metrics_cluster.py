"""``/metrics`` of a real local cluster (``rbee up``): queen, hive and worker, the Grafana dashboard's queries.

Every metric name the dashboard's PromQL reads is exported by one of the three; the hive's and the
worker's ``/metrics`` take only the internal credential; a completion moves the queen's per-model
histograms; a killed worker moves the hive's restart counter.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rbee_runtime.common.credentials import read_credential
from tests.e2e.conftest import API_KEY
from tests.metrics.promql_names import metric_names
from tests.prometheus import sample_value
from tests.support.services import LocalCluster
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "rbee.json"
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info")
KEY = {"Authorization": f"Bearer {API_KEY}"}


def _hive(cluster: LocalCluster) -> dict[str, str]:
    hives = httpx.get(f"{cluster.queen_url}/v1/hives", headers=KEY, timeout=10).json()["hives"]
    assert len(hives) == 1
    return {"id": hives[0]["hive_id"], "url": hives[0]["url"]}


def _hive_headers(cluster: LocalCluster) -> dict[str, str]:
    token = read_credential(cluster.run_dir / "credentials" / "hive.credential", "hive")
    return {"Authorization": f"Bearer {token}"}


def _worker(cluster: LocalCluster) -> dict[str, str]:
    workers = httpx.get(f"{cluster.queen_url}/v1/workers", headers=KEY, timeout=10).json()["workers"]
    assert workers
    return {"id": workers[0]["worker_id"], "url": workers[0]["url"], "hive_id": workers[0]["hive_id"]}


def _scrapes(cluster: LocalCluster) -> dict[str, str]:
    hive, worker = _hive(cluster), _worker(cluster)
    texts = {"queen": httpx.get(f"{cluster.queen_url}/metrics", timeout=10)}
    texts["hive"] = httpx.get(f"{hive['url']}/metrics", headers=_hive_headers(cluster), timeout=30)
    texts["worker"] = httpx.get(
        f"{worker['url']}/metrics", headers=cluster.worker_headers(worker["hive_id"]), timeout=10
    )
    for service, response in texts.items():
        assert response.status_code == 200, (service, response.text)
    return {service: r.text for service, r in texts.items()}


def _exported(text: str) -> set[str]:
    """Family and sample names of an exposition (a family with no series yet still counts: a CPU host's GPUs)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def _dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    assert any(i["name"] == "DS_PROMETHEUS" for i in board["__inputs"])
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def _complete(cluster: LocalCluster) -> None:
    response = httpx.post(
        f"{cluster.queen_url}/v1/completions", headers=KEY, timeout=60,
        json={"model": "tiny", "prompt": "Hello", "max_tokens": 8},
    )  # fmt: skip
    assert response.status_code == 200, response.text


def test_every_dashboard_query_reads_exported_metrics(cluster: LocalCluster) -> None:
    _complete(cluster)
    exported: set[str] = set()
    for text in _scrapes(cluster).values():
        exported |= _exported(text)
    queried = {name for expr in _dashboard_queries() for name in metric_names(expr)}
    assert len(queried) >= 12
    missing = set()
    for name in queried:
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
        if name not in exported and base not in exported:
            missing.add(name)
    assert not missing, f"the dashboard queries metrics no service exports: {sorted(missing)}"


def test_build_info_on_every_service(cluster: LocalCluster) -> None:
    for service, text in _scrapes(cluster).items():
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        (sample,) = [s for s in samples if s.name == "rbee_build_info"]
        assert sample.value == 1
        assert sample.labels["service"] == service
        assert sample.labels["version"] and sample.labels["python"].count(".") == 2


def test_hive_and_worker_metrics_need_the_internal_credential(cluster: LocalCluster) -> None:
    hive, worker = _hive(cluster), _worker(cluster)
    for url in (f"{hive['url']}/metrics", f"{worker['url']}/metrics"):
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers=KEY, timeout=10).status_code == 403  # a client API key does not open it
    assert httpx.get(f"{worker['url']}/metrics", headers=_hive_headers(cluster), timeout=10).status_code == 403


def test_a_completion_moves_the_model_histograms(cluster: LocalCluster) -> None:
    before = _scrapes(cluster)["queen"]
    _complete(cluster)
    after = _scrapes(cluster)["queen"]
    for name in ("rbee_queen_request_duration_seconds_count", "rbee_queen_tokens_per_second_count"):
        assert sample_value(after, name, model="tiny") == sample_value(before, name, model="tiny") + 1, name
    assert sample_value(after, "rbee_queen_request_duration_seconds_sum", model="tiny") > sample_value(
        before, "rbee_queen_request_duration_seconds_sum", model="tiny"
    )


def test_a_killed_worker_counts_as_a_restart(cluster: LocalCluster) -> None:
    """Last in the module: it kills the cluster's worker (the hive starts it again)."""
    hive = _hive(cluster)
    headers = _hive_headers(cluster)

    def restarts() -> float:
        text = httpx.get(f"{hive['url']}/metrics", headers=headers, timeout=30).text
        return sample_value(text, "rbee_hive_worker_restarts_total", model="tiny")

    before = restarts()
    workers = httpx.get(f"{hive['url']}/v1/workers", headers=headers, timeout=10).json()["workers"]
    (pid,) = [w["pid"] for w in workers if w["model_id"] == "tiny" and w["pid"]]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: restarts() == before + 1 or None, 30, "the hive to count the restart", 0.5)

    def scraped() -> bool | None:
        try:
            return bool(_scrapes(cluster))
        except (httpx.HTTPError, AssertionError):
            return None  # the queen still lists the killed worker, or the new one is loading

    wait_until(scraped, 60, "the restarted worker to answer /metrics", 1.0)
