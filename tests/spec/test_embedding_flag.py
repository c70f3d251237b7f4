"""``models[].embedding``: an embedding model, carried into the hive config its workers start from."""

from __future__ import annotations

import pytest

from rbee.spec import SpecError, parse_spec

SPEC = """\
cluster: lab
hosts:
  - name: a
    address: 10.0.0.1
models:
  - id: tiny
    source: file:///models/tiny.gguf
  - id: embed
    source: file:///models/embed.gguf
    embedding: {flag}
"""


def test_embedding_defaults_to_false_and_is_read() -> None:
    spec = parse_spec(SPEC.format(flag="true"))
    assert [(m.id, m.embedding) for m in spec.models] == [("tiny", False), ("embed", True)]


def test_embedding_must_be_a_boolean() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.format(flag="sometimes"))
    (issue,) = caught.value.issues
    assert "models[1].embedding" in issue.render("cluster.yaml")


def test_the_flag_reaches_the_hive_config_and_the_worker_arguments() -> None:
    import shlex

    import yaml

    from rbee.deploy.templates import HiveModel, WorkerSettings, render_worker, worker_args

    settings = WorkerSettings(worker_id="a-embed-1", model_id="embed", model_path="/m/e.gguf", bind_host="127.0.0.1",
                              port=7840, slots=1, ctx_size=512, backend="cpu", device=0, hive_url="http://h:7835",
                              embedding=True)  # fmt: skip
    assert worker_args(settings)[-1] == "--embedding"
    env = render_worker(settings)
    line = next(x for x in env.splitlines() if x.startswith("RBEE_WORKER_ARGS="))
    assert shlex.split(shlex.split(line.split("=", 1)[1])[0]) == worker_args(settings)  # systemd = launchd
    plain = WorkerSettings(**{**settings.__dict__, "embedding": False})
    assert "--embedding" not in worker_args(plain) and "--embedding" not in render_worker(plain)
    model = HiveModel("embed", "file:///m/embed.gguf", "/m/embed.gguf", None, True)
    assert yaml.safe_load(_hive_yaml([model]))["models"][0]["embedding"] is True


def _hive_yaml(models: list[object]) -> str:
    from rbee.deploy.templates import HiveConfig, render_hive

    return render_hive(HiveConfig(
        host="a", bind_host="127.0.0.1", advertise_host="127.0.0.1", port=7835, queen_url="http://q:7833",
        credential_file=None, data_dir="/d", backend="cpu", devices=[], max_workers=2, ctx_size=512,
        ram_reserve_bytes=0, heartbeat_interval=5.0, worker_idle_timeout=0.0, loading_timeout=60.0,
        worker_command=["python", "-m", "rbee_runtime.worker"], worker_port_first=7840,
        models=models, placements=[],  # type: ignore[arg-type]
    ))  # fmt: skip
