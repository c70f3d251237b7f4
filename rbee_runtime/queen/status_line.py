"""The queen's status line for systemd (``systemctl status rbee-queen``): where it listens, what it can route to."""

from __future__ import annotations

from rbee_runtime.queen.state import QueenState


def status_line(state: QueenState) -> str:
    """``listening on URL; 2 hive(s) online, 3 worker(s) ready``, or ``...; no hive online`` (degraded)."""
    config = state.config
    url = f"{'https' if config.tls else 'http'}://{config.host}:{config.port}"
    online = sum(1 for hive in state.registry.hives() if hive.status == "online")
    if not online:
        return f"listening on {url}; no hive online"
    ready = sum(1 for worker in state.registry.workers() if worker.routable)
    return f"listening on {url}; {online} hive(s) online, {ready} worker(s) ready"
