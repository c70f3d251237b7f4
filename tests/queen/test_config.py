from __future__ import annotations

from pathlib import Path

import pytest

from rbee_runtime.common.ports import QUEEN_PORT
from rbee_runtime.queen.config import ConfigError, QueenConfig, load_queen_config, resolve_config


def test_defaults() -> None:
    cfg = QueenConfig()
    assert cfg.host == "127.0.0.1"
    assert cfg.port == QUEEN_PORT
    assert cfg.api_keys == []


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        QueenConfig.model_validate({"queue_maxx": 3})


def test_keys_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_TEST_KEYS", "k1, k2,,")
    (tmp_path / "keys.txt").write_text("# comment\nk3\n\nk1\n")
    path = tmp_path / "queen.yaml"
    path.write_text("queen_id: q1\nport: 9000\napi_keys_env: RBEE_TEST_KEYS\napi_keys_file: keys.txt\nqueue_max: 2\n")
    cfg = load_queen_config(path)
    assert cfg.queen_id == "q1"
    assert cfg.port == 9000
    assert cfg.queue_max == 2
    assert cfg.api_keys == ["k1", "k2", "k3"]


def test_json_config(tmp_path: Path) -> None:
    path = tmp_path / "queen.json"
    path.write_text('{"queen_id": "j", "stale_timeout_s": 20}')
    assert load_queen_config(path).stale_timeout_s == 20


def test_inline_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "queen.yaml"
    path.write_text("api_keys: [secret]\n")
    with pytest.raises(ConfigError, match="api_keys_env"):
        load_queen_config(path)


def test_missing_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RBEE_NOPE", raising=False)
    path = tmp_path / "queen.yaml"
    path.write_text("api_keys_env: RBEE_NOPE\n")
    with pytest.raises(ConfigError, match="RBEE_NOPE"):
        load_queen_config(path)


def test_invalid_values_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "queen.yaml"
    path.write_text("queue_max: 0\n")
    with pytest.raises(ConfigError, match="queue_max"):
        load_queen_config(path)


def test_stale_timeout_longer_than_heartbeat() -> None:
    with pytest.raises(ValueError, match="stale_timeout_s"):
        QueenConfig(heartbeat_interval_s=10, stale_timeout_s=5)


def test_credential_paths_need_the_credentials_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting naming $CREDENTIALS_DIRECTORY outside systemd is a config error naming it, not a traceback."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in ("cluster_secret_file", "api_keys_file", "tls_cert_file"):
        with pytest.raises(ConfigError, match=rf"{name}: .*CREDENTIALS_DIRECTORY.*not set"):
            resolve_config({name: "${CREDENTIALS_DIRECTORY}/x"})
