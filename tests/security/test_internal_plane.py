"""The internal plane on real processes: a stranger can neither join the cluster nor reach hives and workers.

A queen, a hive and its worker run with a cluster secret (the queen) and the hive's credential derived
from it; a "forger" listens on another loopback address and tries every way into the queen's routing.
No prompt may ever reach it, every hive and worker route refuses requests without the right credential,
and the cluster still serves afterwards.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest

from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.credentials import hive_credential, new_cluster_secret, worker_credential, write_credential
from rbee_runtime.common.ports import free_port
from tests.support.processes import ProcessPool
from tests.support.services import PY, Cluster, start_cluster
from tests.support.wire import heartbeat, worker_info

pytestmark = [pytest.mark.engine, pytest.mark.slow]

API_KEY = "client-key-internal-plane"
SECRET = new_cluster_secret()
HIVE_ID = "hive"  # the hive id tests.support.services.start_cluster gives its hive
HIVE_CRED = hive_credential(SECRET, HIVE_ID)
WORKER_CRED = worker_credential(HIVE_CRED)
FORGER_HOST = "127.0.0.2"  # another loopback address: "another machine" for the queen's host check


class _Forger(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[str]] = []

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        type(self).received.append(f"{self.command} {self.path} {body}")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        self._record()

    def do_POST(self) -> None:
        self._record()

    def do_DELETE(self) -> None:
        self._record()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def forger() -> Iterator[str]:
    """An HTTP server on 127.0.0.2 that records whatever reaches it; its base URL."""
    with socket.socket() as probe:
        probe.bind((FORGER_HOST, 0))
        port = probe.getsockname()[1]
    server = http.server.ThreadingHTTPServer((FORGER_HOST, port), _Forger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{FORGER_HOST}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path) -> Cluster:
    """Queen (cluster secret, API key) + hive (its credential) keeping one worker of the tiny model."""
    folder = module_processes.workdir / "credentials"
    write_credential(folder / "cluster-secret", SECRET)
    write_credential(folder / "hive.credential", HIVE_CRED)
    (folder / "api-keys").write_text(API_KEY + "\n")
    return start_cluster(
        module_processes, tiny_model_path,
        queen={"cluster_secret_file": str(folder / "cluster-secret"), "api_keys_file": str(folder / "api-keys")},
        hive={"credential_file": str(folder / "hive.credential")}, api_key=API_KEY,
    )  # fmt: skip


def _queen_get(cluster: Cluster, path: str) -> Any:
    response = httpx.get(f"{cluster.queen.url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _workers(cluster: Cluster) -> list[dict[str, Any]]:
    return list(_queen_get(cluster, "/v1/workers")["workers"])


def _beat(cluster: Cluster, hive_id: str, worker_url: str, hive_url: str | None = None) -> dict[str, Any]:
    rogue = worker_info("rogue-1", TINY_MODEL_ID, hive_id=hive_id, url=worker_url, slots=8)
    beat = heartbeat(hive_id, models=[TINY_MODEL_ID], workers=[rogue], url=hive_url or cluster.hive.url)
    return beat.model_dump(mode="json")


def _post_beat(cluster: Cluster, body: dict[str, Any], token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{cluster.queen.url}/v1/hives/heartbeat", json=body, headers=headers, timeout=10)


def _complete(cluster: Cluster) -> str:
    client = openai.OpenAI(base_url=cluster.api, api_key=API_KEY, max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model=TINY_MODEL_ID, messages=[{"role": "user", "content": "the secret prompt"}], max_tokens=4
    )
    return reply.choices[0].finish_reason or ""


@pytest.mark.parametrize(
    ("label", "token", "hive_id", "on_forger_host", "status", "code"),
    [
        ("no credential", None, HIVE_ID, False, 401, "MISSING_INTERNAL_CREDENTIAL"),
        ("a client API key", API_KEY, HIVE_ID, False, 403, "INVALID_INTERNAL_CREDENTIAL"),
        ("the cluster secret itself", SECRET, HIVE_ID, False, 403, "INVALID_INTERNAL_CREDENTIAL"),
        ("another hive's credential", hive_credential(SECRET, "other"), HIVE_ID, False, 403,
         "INVALID_INTERNAL_CREDENTIAL"),
        ("a worker's credential", WORKER_CRED, HIVE_ID, False, 403, "INVALID_INTERNAL_CREDENTIAL"),
        ("a new hive id, no credential", None, "evil", False, 401, "MISSING_INTERNAL_CREDENTIAL"),
        ("the hive's own credential, a worker on another host", HIVE_CRED, HIVE_ID, True, 403,
         "WORKER_URL_NOT_ON_HIVE"),
    ],
)  # fmt: skip
def test_forged_heartbeat_is_refused(
    cluster: Cluster, forger: str, label: str, token: str | None, hive_id: str, on_forger_host: bool, status: int,
    code: str,
) -> None:  # fmt: skip
    # The rogue worker sits on the forger's listener; with on_forger_host False the beat claims the hive's own
    # host, but a worker URL on the hive's host that the forger does not run is harmless: only a refusal counts.
    worker_url = forger if on_forger_host else forger.replace(FORGER_HOST, "127.0.0.1")
    response = _post_beat(cluster, _beat(cluster, hive_id, worker_url), token)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), f"{label}: {response.text}"
    assert "rogue-1" not in {w["worker_id"] for w in _workers(cluster)}
    assert {h["hive_id"] for h in _queen_get(cluster, "/v1/hives")["hives"]} == {HIVE_ID}


def test_no_prompt_reaches_the_forger_and_the_cluster_serves(cluster: Cluster, forger: str) -> None:
    for _ in range(3):
        assert _complete(cluster) in ("length", "stop")
    assert _Forger.received == []
    (worker,) = cluster.serving()
    assert worker["hive_id"] == HIVE_ID and worker["url"].startswith("http://127.0.0.1:")


# Every route of the hive's and the worker's API (test_route_lists_cover_the_apps keeps the lists whole).
HIVE_ROUTES = [
    ("GET", "/health"), ("GET", "/metrics"), ("GET", "/v1/capabilities"), ("GET", "/v1/models"),
    ("POST", "/v1/models"),
    ("DELETE", "/v1/models/x"), ("GET", "/v1/catalog/backup"), ("POST", "/v1/catalog/restore"),
    ("GET", "/v1/workers"), ("POST", "/v1/workers"), ("POST", "/v1/workers/ready"), ("DELETE", "/v1/workers/x"),
]  # fmt: skip
WORKER_ROUTES = [
    ("GET", "/health"), ("GET", "/metrics"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"), ("DELETE", "/v1/requests/x"), ("POST", "/v1/shutdown"),
]  # fmt: skip


def _route_set(app_routes: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app_routes:
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                out.add((method, route.path))
    return out


def test_route_lists_cover_the_apps(tmp_path: Path) -> None:
    """The lists above are every route of the hive and worker apps (a new route must be added there)."""
    from rbee_runtime.hive import app as hive_app

    hive_paths = _route_set([*hive_app.system.routes, *hive_app.models.routes, *hive_app.workers.routes,
                             *hive_app.catalog.routes, *hive_app.workers_ready.routes])  # fmt: skip
    normalise = {"/v1/models/{model_id:path}": "/v1/models/x", "/v1/workers/{worker_id}": "/v1/workers/x"}
    assert {(m, normalise.get(p, p)) for m, p in hive_paths} == set(HIVE_ROUTES)
    from rbee_runtime.worker.app import create_app

    class _NoService:
        worker_id = "w"

    worker_paths = _route_set(create_app(_NoService()).routes)  # type: ignore[arg-type]
    assert {(m, p.replace("{request_id}", "x")) for m, p in worker_paths} == set(WORKER_ROUTES)


@pytest.mark.parametrize(("method", "path"), HIVE_ROUTES)
def test_every_hive_route_needs_the_hive_credential(cluster: Cluster, method: str, path: str) -> None:
    url = f"{cluster.hive.url}{path}"
    bare = httpx.request(method, url, json={}, timeout=10)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "MISSING_INTERNAL_CREDENTIAL", bare.text
    for token in (API_KEY, hive_credential(SECRET, "other"), SECRET):
        wrong = httpx.request(method, url, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert wrong.status_code == 403, (token, wrong.text)
    as_worker = httpx.request(method, url, json={}, headers={"Authorization": f"Bearer {WORKER_CRED}"}, timeout=10)
    if path == "/v1/workers/ready":  # a worker's ready callback: its credential opens this route (422: no body)
        assert as_worker.status_code == 422, as_worker.text
    else:
        assert as_worker.status_code == 403, as_worker.text


def test_the_hive_credential_opens_the_hive(cluster: Cluster) -> None:
    response = httpx.get(f"{cluster.hive.url}/v1/workers", headers={"Authorization": f"Bearer {HIVE_CRED}"})
    assert response.status_code == 200 and len(response.json()["workers"]) == 1


@pytest.mark.parametrize(("method", "path"), WORKER_ROUTES)
def test_every_worker_route_needs_the_worker_credential(cluster: Cluster, method: str, path: str) -> None:
    (worker,) = cluster.serving()
    url = f"{worker['url']}{path}"
    bare = httpx.request(method, url, json={"prompt": "x", "max_tokens": 1}, timeout=10)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "MISSING_INTERNAL_CREDENTIAL", bare.text
    for token in (API_KEY, HIVE_CRED, SECRET, worker_credential(hive_credential(SECRET, "other"))):
        wrong = httpx.request(method, url, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert wrong.status_code == 403, (token, wrong.text)
    health = httpx.get(f"{worker['url']}/health", headers={"Authorization": f"Bearer {WORKER_CRED}"}, timeout=10)
    assert health.status_code == 200 and health.json()["state"] == "idle"  # the refused shutdown did nothing


@pytest.mark.parametrize("token", [HIVE_CRED, WORKER_CRED, SECRET])
def test_internal_credentials_never_open_the_public_api(cluster: Cluster, token: str) -> None:
    response = httpx.get(f"{cluster.queen.url}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_API_KEY"


def test_services_on_a_network_address_refuse_to_start_without_credentials(
    module_processes: ProcessPool, tiny_model_path: Path
) -> None:
    """Queen, hive and worker bound to a non-loopback address without a credential exit with the reason."""
    work = module_processes.workdir
    (work / "queen-open.yaml").write_text(f"host: 0.0.0.0\nport: {free_port()}\n")
    (work / "hive-open.yaml").write_text(f"hive_id: open\nhost: 0.0.0.0\nport: {free_port()}\ndata_dir: {work}/o\n")
    commands = {
        "queen": [PY, "-m", "rbee_runtime.queen", "--config", str(work / "queen-open.yaml")],
        "hive": [PY, "-m", "rbee_runtime.hive", "--config", str(work / "hive-open.yaml")],
        "worker": [PY, "-m", "rbee_runtime.worker", "--worker-id", "w", "--model-id", "m", "--model-path",
                   str(tiny_model_path), "--host", "0.0.0.0", "--port", str(free_port())],
    }  # fmt: skip
    for name, command in commands.items():
        proc = module_processes.start(f"open-{name}", command)
        assert proc.wait(30) != 0, name
        log = proc.log()
        assert "reachable from other machines" in log and ("credential" in log or "secret" in log), (name, log[-800:])


def test_a_worker_refusing_the_queens_credential_is_taken_out_not_blamed_on_the_client(
    cluster: Cluster, module_processes: ProcessPool, tiny_model_path: Path
) -> None:
    """A worker of a valid hive that holds another cluster's credential answers the queen 403: the queen
    quarantines it and answers 503 NO_WORKER_AVAILABLE; the client never sees an internal credential error."""
    stranger = module_processes.workdir / "stranger.credential"
    write_credential(stranger, worker_credential(hive_credential(new_cluster_secret(), "h9")))
    port = free_port()
    worker = module_processes.start("mismatched", [
        PY, "-m", "rbee_runtime.worker", "--worker-id", "h9-odd", "--model-id", "odd-model", "--model-path",
        str(tiny_model_path), "--port", str(port), "--ctx-size", "256", "--credential-file", str(stranger),
    ])  # fmt: skip
    info = worker_info("h9-odd", "odd-model", hive_id="h9", url=f"http://127.0.0.1:{port}", slots=1)
    beat = heartbeat("h9", models=["odd-model"], workers=[info], url="http://127.0.0.1:9").model_dump(mode="json")
    for _ in range(200):  # the worker binds its port at once, then loads: wait until it answers at all
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            worker.check_alive()
            time.sleep(0.05)
    assert _post_beat(cluster, beat, hive_credential(SECRET, "h9")).status_code == 200
    client = openai.OpenAI(base_url=cluster.api, api_key=API_KEY, max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as refused:
        client.completions.create(model="odd-model", prompt="x", max_tokens=2)
    error = refused.value.response.json()["error"]
    assert refused.value.status_code == 503 and error.get("code") == "NO_WORKER_AVAILABLE", refused.value.body
    assert "CREDENTIAL" not in refused.value.response.text  # the cluster's fault, not the client's
    assert "h9-odd" in cluster.queen.log() and "INVALID_INTERNAL_CREDENTIAL" in cluster.queen.log()
    (odd,) = [w for w in _workers(cluster) if w["worker_id"] == "h9-odd"]
    assert not odd["routable"]  # quarantined
