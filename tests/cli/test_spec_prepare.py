"""``rbee spec prepare``: warms the control machine's caches (wheelhouse, engines, models) and prints them as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import rbee


def test_prepare_prints_the_wheelhouse_and_the_models(tmp_path: Path, tiny_model_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "cluster: prep\nhosts:\n  - {name: a, address: 10.0.0.1, backend: cpu}\n"
        f'models:\n  - {{id: tiny, source: "file://{tiny_model_path}"}}\nplacements:\n  - {{model: tiny}}\n'
    )
    done = rbee("spec", "prepare", str(spec), "--python", "3.11", "--arch", "x86_64")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    house = out["wheelhouses"]["py3.11-x86_64"]
    assert Path(house["folder"], house["rbee_wheel"]).is_file() and house["extras"] == []
    assert out["models"]["tiny"]["size_bytes"] == tiny_model_path.stat().st_size
    (engine,) = out["engines"].values()  # this machine's CPU build: cached or built here, never "no host"
    assert engine["problem"] is None and Path(engine["wheel"]).is_file()
