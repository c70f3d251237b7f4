"""How the services run uvicorn: uvloop's event loop and httptools' HTTP parser where installed.

Both are dependencies of rbee (pyproject); on a platform without them (uvloop has no Windows build)
uvicorn's own asyncio loop and h11 parser are used instead, with the same behaviour, only slower.
"""

from __future__ import annotations

import importlib.util
from typing import Any


def fast_server_options() -> dict[str, Any]:
    """``loop`` and ``http`` for ``uvicorn.Config``: ``uvloop``/``httptools`` when importable, else asyncio/h11."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") is not None else "h11",
    }
