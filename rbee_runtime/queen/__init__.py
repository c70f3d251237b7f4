"""The queen: rbee's public, OpenAI-compatible endpoint.

It learns hives and workers from heartbeats (:mod:`.registry`), picks a worker per request or asks a
hive to start one (:mod:`.scheduler`), streams the worker's tokens back in OpenAI format
(:mod:`.inference`, :mod:`.openai_format`) and guards the public routes with API keys (:mod:`.auth`).
"""

from rbee_runtime.queen.config import QueenConfig, load_queen_config

__all__ = ["QueenConfig", "load_queen_config"]
