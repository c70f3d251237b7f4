"""Where rbee lives on a deployed host, and the worker instances a host runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rbee_runtime.common.ports import WORKER_PORT_FIRST

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


@dataclass(frozen=True)
class WorkerInstance:
    """One placed worker: the systemd instance ``rbee-worker@<name>`` and its settings."""

    name: str
    worker_id: str
    model_id: str
    port: int
    slots: int
    device: str

    @property
    def unit(self) -> str:
        return f"rbee-worker@{self.name}.service"


def worker_instances(data: dict[str, Any]) -> list[WorkerInstance]:
    """The placed workers of a host, from its inventory data (ports from 7840 up, in placement order)."""
    seen: dict[str, int] = {}
    out = []
    for index, placement in enumerate(data["rbee_placements"]):
        model_id = placement["model_id"]
        seen[model_id] = seen.get(model_id, 0) + 1
        name = f"{model_id}-{seen[model_id]}"
        out.append(
            WorkerInstance(
                name=name,
                worker_id=f"{data['rbee_host']}-{name}",
                model_id=model_id,
                port=WORKER_PORT_FIRST + index,
                slots=placement["slots"],
                device=placement["device"],
            )
        )
    return out


def cuda_device(device: str, gpus: list[int] | str) -> int:
    """The GPU index a worker uses: ``cuda:N`` → N, else the host's first listed GPU (0 for ``all``)."""
    if device.startswith("cuda:"):
        return int(device.split(":", 1)[1])
    return gpus[0] if isinstance(gpus, list) and gpus else 0
