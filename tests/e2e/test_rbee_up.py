"""The embedded-default path a user takes: ``rbee up``, then the openai client, curl-like HTTP and the CLI."""

from __future__ import annotations

import json
import signal
import subprocess

import httpx
import openai
import psutil
import pytest

from tests.e2e.conftest import API_KEY, start_local_cluster
from tests.support.processes import ProcessPool
from tests.support.services import RBEE, LocalCluster
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def client(cluster: LocalCluster, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.queen_url}/v1", api_key=key, max_retries=0, timeout=60)


def test_models_list(cluster: LocalCluster) -> None:
    assert [m.id for m in client(cluster).models.list().data] == ["tiny"]


def test_completion_and_chat_without_stream(cluster: LocalCluster) -> None:
    c = client(cluster)
    completion = c.completions.create(model="tiny", prompt="The bee", max_tokens=12)
    assert completion.choices[0].text and completion.usage and completion.usage.completion_tokens > 0
    chat = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=12)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content


def test_completion_and_chat_streamed(cluster: LocalCluster) -> None:
    c = client(cluster)
    pieces = [ch.choices[0].text for ch in c.completions.create(model="tiny", prompt="A", max_tokens=16, stream=True)
              if ch.choices]  # fmt: skip
    assert len([p for p in pieces if p]) >= 3
    deltas = [
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=16, stream=True
        )
        if ch.choices
    ]
    assert "".join(deltas)


def test_curl_like_plain_http(cluster: LocalCluster) -> None:
    response = httpx.post(
        f"{cluster.queen_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"


def test_api_key_is_required(cluster: LocalCluster) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(cluster, key="wrong").models.list()
    assert caught.value.code == "INVALID_API_KEY" and "not valid" in str(caught.value)
    response = httpx.get(f"{cluster.queen_url}/v1/models", timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "MISSING_API_KEY"


def test_unknown_model_is_404(cluster: LocalCluster) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(cluster).completions.create(model="nope", prompt="x", max_tokens=2)
    assert "nope" in str(caught.value)


def test_cli_views(cluster: LocalCluster) -> None:
    for command, expected in (("workers", "tiny"), ("hives", "online"), ("models", "tiny")):
        result = subprocess.run([RBEE, command, "ls"], env=cluster.env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout and "here" in result.stdout


def test_cli_infer_streams(cluster: LocalCluster) -> None:
    result = subprocess.run(
        [RBEE, "infer", "--model", "tiny", "--prompt", "Bees", "--max-tokens", "10"],
        env=cluster.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 2


def test_cli_infer_unknown_model_fails_clearly(cluster: LocalCluster) -> None:
    result = subprocess.run(
        [RBEE, "infer", "--model", "nope", "--prompt", "x"],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "MODEL_NOT_FOUND" in result.stderr


def _worker_health(cluster: LocalCluster) -> list[dict[str, int]]:
    workers = httpx.get(f"{cluster.queen_url}/v1/workers", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    return [
        httpx.get(f"{w['url']}/health", timeout=5, headers=cluster.worker_headers(w["hive_id"])).json()
        for w in workers["workers"]
    ]


def _worker_tokens(cluster: LocalCluster) -> int:
    return sum(h["tokens_generated_total"] for h in _worker_health(cluster))


def test_ctrl_c_on_infer_cancels_on_the_worker(cluster: LocalCluster) -> None:
    before = _worker_tokens(cluster)
    process = subprocess.Popen(
        [RBEE, "infer", "--model", "tiny", "--prompt", "Long story", "--max-tokens", "4000", "--temperature", "1.0"],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.read(20)  # tokens are flowing
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "cancelled" in err
    # No slot busy: the generation ended (a worker counts its tokens before it frees the slot), early.
    wait_until(lambda: not any(h["slots_busy"] for h in _worker_health(cluster)), 10, "every worker slot free")
    assert _worker_tokens(cluster) - before < 4000, "the worker kept generating after the cancel"


def test_ctrl_c_on_rbee_up_leaves_nothing_running(processes: ProcessPool, tiny_model_path) -> None:  # type: ignore[no-untyped-def]
    running = start_local_cluster(processes, tiny_model_path)
    started = running.started
    assert any("rbee_runtime.worker" in " ".join(p.cmdline()) for p in started)
    assert running.stop() == 0
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
    output = running.proc.log()
    assert "nothing left running" in output and "warning" not in output, output


def test_rbee_up_refuses_a_spec_without_a_local_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "cluster.yaml"
    spec.write_text("cluster: far\nhosts:\n  - {name: far, address: 10.9.9.9}\n")
    result = subprocess.run([RBEE, "up", "--spec", str(spec)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "no host of this spec is this machine" in result.stderr


def test_rbee_up_refuses_an_invalid_spec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "cluster.yaml"
    spec.write_text("cluster: x\nhosts:\n  - {name: a, address: localhost, backend: tpu}\n")
    result = subprocess.run([RBEE, "up", "--spec", str(spec)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "hosts[0].backend" in result.stderr


def test_output_is_json_parsable_for_scripts(cluster: LocalCluster) -> None:
    body = httpx.get(f"{cluster.queen_url}/v1/hives", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert json.loads(json.dumps(body))["hives"][0]["hive_id"] == "here"
