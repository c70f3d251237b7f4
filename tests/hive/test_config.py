"""HiveConfig: defaults, validation, YAML and JSON files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rbee_runtime.common.ports import HIVE_PORT, WORKER_PORT_FIRST, WORKER_PORT_LAST
from rbee_runtime.hive.config import HiveConfig, load_hive_config


def test_defaults(tmp_path: Path) -> None:
    cfg = HiveConfig(hive_id="h", data_dir=tmp_path)
    assert cfg.host == "127.0.0.1"
    assert cfg.port == HIVE_PORT
    assert (cfg.worker_port_first, cfg.worker_port_last) == (WORKER_PORT_FIRST, WORKER_PORT_LAST)
    assert cfg.worker_command == [sys.executable, "-m", "rbee_runtime.worker"]
    assert cfg.queen_url is None
    assert cfg.backend == "cpu"
    assert cfg.url == f"http://127.0.0.1:{HIVE_PORT}"
    assert cfg.catalog_path == tmp_path / "catalog.db"
    assert cfg.logs_dir == tmp_path / "logs"


def test_advertise_host_and_wildcard_bind(tmp_path: Path) -> None:
    cfg = HiveConfig(hive_id="h", data_dir=tmp_path, host="0.0.0.0", port=9000, advertise_host="10.0.0.5",
                     credential="ab" * 32)  # fmt: skip
    assert cfg.url == "http://10.0.0.5:9000"
    assert cfg.local_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_field": 1},
        {"backend": "rocm"},
        {"worker_port_first": 9000, "worker_port_last": 8000},
        {"queen_url": "queen:7833"},
        {"max_workers": 0},
        {"models": [{"model_id": "a", "reference": "x", "local_path": "/a"}] * 2},
        {"placements": [{"model_id": "a", "replicas": -1}]},
    ],
)
def test_invalid_configs_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HiveConfig.model_validate({"hive_id": "h", "data_dir": str(tmp_path), **bad})


def test_load_yaml_resolves_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "hive.yaml"
    path.write_text(
        "hive_id: h1\n"
        "data_dir: state\n"
        "queen_url: http://queen:7833/\n"
        "models:\n"
        "  - {model_id: m, reference: 'hf:o/r/m.gguf', local_path: models/m.gguf}\n"
        "placements:\n"
        "  - {model_id: m, replicas: 2, slots: 3}\n"
    )
    cfg = load_hive_config(path)
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.models[0].local_path == str(tmp_path / "models" / "m.gguf")
    assert cfg.queen_url == "http://queen:7833"
    assert cfg.placements[0].replicas == 2 and cfg.placements[0].slots == 3


def test_load_json(tmp_path: Path) -> None:
    path = tmp_path / "hive.json"
    path.write_text(json.dumps({"hive_id": "h2", "data_dir": str(tmp_path / "d"), "port": 9001}))
    cfg = load_hive_config(path)
    assert (cfg.hive_id, cfg.port, cfg.data_dir) == ("h2", 9001, tmp_path / "d")


def test_load_rejects_non_mapping(tmp_path: Path) -> None:
    path = tmp_path / "hive.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_hive_config(path)
