"""The queen's live dashboard at ``/ui`` (plain HTML/CSS/JS in ``static/``) and its JSON at ``/ui/api/state``."""

from rbee_runtime.queen.dashboard.routes import router

__all__ = ["router"]
