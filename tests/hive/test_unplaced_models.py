"""A model a deploy no longer places on a host: its file is deleted before the hive restarts with its new config, and
the restarted hive forgets it (no longer in its catalog, so no heartbeat advertises it); other models stay."""

from __future__ import annotations

import os
from pathlib import Path

from rbee_runtime.common.contracts import RegisterModelRequest
from rbee_runtime.hive.config import HiveConfig, ModelConfig
from rbee_runtime.hive.service import Hive


def _model(folder: Path, name: str) -> Path:
    path = folder / f"{name}.gguf"
    path.write_bytes(b"GGUF" + name.encode() * 100)
    return path


def _started(config: HiveConfig) -> list[str]:
    """The catalog's models once a hive of ``config`` registered its models (as its start does), then closed."""
    hive = Hive(config)
    try:
        hive._register_configured_models()
        return hive.catalog.model_ids()
    finally:
        hive.catalog.close()
        os.close(hive._lock_fd)


def test_the_hive_forgets_a_model_no_longer_configured_whose_file_is_gone(tmp_path: Path) -> None:
    paths = {name: _model(tmp_path, name) for name in ("tiny", "tiny2", "mine")}
    configured = [ModelConfig(model_id=m, reference=f"file://{paths[m]}", local_path=str(paths[m]))
                  for m in ("tiny", "tiny2")]  # fmt: skip
    config = HiveConfig(hive_id="h", data_dir=tmp_path / "data", models=configured)
    hive = Hive(config)
    hive.catalog.register(RegisterModelRequest(model_id="mine", reference="x", local_path=str(paths["mine"])))
    hive.catalog.close()
    os.close(hive._lock_fd)
    assert _started(config) == ["mine", "tiny", "tiny2"]

    paths["tiny2"].unlink()  # the deploy: tiny2 no longer placed here, its file deleted, the config without it
    assert _started(config.model_copy(update={"models": configured[:1]})) == ["mine", "tiny"]

    paths["mine"].unlink()  # a model registered over HTTP whose file went: it cannot be served either
    assert _started(config.model_copy(update={"models": configured[:1]})) == ["tiny"]
