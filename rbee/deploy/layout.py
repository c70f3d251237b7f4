"""Where rbee lives on a deployed host."""

from __future__ import annotations

from dataclasses import dataclass

CONFIG_DIR = "/etc/rbee"
DATA_DIR = "/var/lib/rbee"
WORKERS_DIR = f"{CONFIG_DIR}/workers"
API_KEYS_FILE = f"{CONFIG_DIR}/api-keys"


@dataclass(frozen=True)
class HostLayout:
    """Paths under the install prefix (``deploy.prefix``)."""

    prefix: str

    @property
    def venv(self) -> str:
        return f"{self.prefix}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def wheelhouse(self) -> str:
        return f"{self.prefix}/wheelhouse"

    @property
    def engines(self) -> str:
        return f"{self.prefix}/engines"

    @property
    def models(self) -> str:
        return f"{self.prefix}/models"

    @property
    def stamps(self) -> str:
        return f"{self.prefix}/stamps"

    def model_path(self, model_id: str) -> str:
        return f"{self.models}/{model_id}.gguf"
