"""The hive's models folders: the only places a model registered or restored over HTTP may live.

The folders are ``<data_dir>/models`` and the folder of every model in the hive config
(``models[].local_path``; a deploy puts them all in ``<prefix>/models``). A path outside them is
refused before the file system is asked anything about it, so the answer is the same whether the
file exists or not and nothing outside is ever read or hashed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rbee_runtime.common.error_codes import ErrorCode
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.config import HiveConfig


def model_roots(config: HiveConfig) -> list[Path]:
    """``<data_dir>/models`` and the folders of the configured models, normalised, without duplicates."""
    folders = [config.data_dir / "models", *(Path(m.local_path).parent for m in config.models)]
    roots: list[Path] = []
    for folder in folders:
        for form in (Path(os.path.normpath(folder.expanduser())), Path(os.path.realpath(folder.expanduser()))):
            if form not in roots:
                roots.append(form)
    return roots


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path != root and path.is_relative_to(root) for root in roots)


def outside_reason(local_path: str, roots: Sequence[Path]) -> str | None:
    """Why ``local_path`` may not be used (None: it is inside a models folder).

    Decided on the text first (``..`` folded, no file system access); only a path that is
    inside by its text has its symlinks resolved, and must still be inside after that.
    """
    given = Path(local_path).expanduser()
    if not given.is_absolute():
        return "it is not an absolute path"
    if not _inside(Path(os.path.normpath(given)), roots):
        return "it is outside this hive's models folders"
    if not _inside(Path(os.path.realpath(given)), roots):
        return "it leads (through a symbolic link) outside this hive's models folders"
    return None


def confine(model_id: str, local_path: str, roots: Sequence[Path]) -> None:
    """400 ``MODEL_PATH_NOT_ALLOWED`` unless ``local_path`` lies inside one of ``roots``."""
    reason = outside_reason(local_path, roots)
    if reason is None:
        return
    shown = ", ".join(str(r) for r in roots)
    raise ApiError(
        400,
        ErrorCode.MODEL_PATH_NOT_ALLOWED,
        f"local_path {local_path!r} of {model_id!r} is refused: {reason} ({shown}). "
        "Put the model file in one of these folders, then register it again.",
        {
            "model_id": model_id,
            "field": "local_path",
            "local_path": local_path,
            "models_folders": [str(r) for r in roots],
        },
    )
