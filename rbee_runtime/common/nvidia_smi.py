"""What ``nvidia-smi --query-gpu`` prints, parsed: one row per GPU, ``[N/A]`` fields kept as ``None``.

The deploy's probe (on each host, over SSH), ``rbee up`` and the hive (when nvidia-ml-py is absent)
run ``NVIDIA_SMI_QUERY`` and read it with ``parse_nvidia_smi``. A field the driver cannot report
(``[N/A]``, ``[Not Supported]``, e.g. memory or temperature on a MIG-enabled GPU) leaves that field
empty and keeps the GPU. Recorded outputs of real GPUs are the tests' fixtures.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

QUERY_FIELDS = (
    "index",
    "name",
    "memory.total",
    "memory.free",
    "compute_cap",
    "driver_version",
    "temperature.gpu",
    "mig.mode.current",
)
NVIDIA_SMI_QUERY = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits"
"""The one query everybody runs (older recordings with only the first five fields still parse)."""

_MISSING = {"", "[n/a]", "n/a", "[not supported]", "[unknown error]", "[insufficient permissions]"}
MIB = 1024 * 1024


@dataclass(frozen=True)
class SmiGpu:
    """One GPU as ``nvidia-smi`` reports it (memory in MiB; ``None`` where it printed ``[N/A]``)."""

    index: int
    name: str
    memory_total_mib: int | None
    memory_free_mib: int | None
    compute_cap: str | None = None
    driver_version: str | None = None
    temperature_c: int | None = None
    mig: bool = False

    @property
    def sm(self) -> str | None:
        """The CUDA architecture number of ``compute_cap`` (``8.9`` → ``89``), as CMake wants it."""
        if not self.compute_cap:
            return None
        major, _, minor = self.compute_cap.partition(".")
        return f"{major}{minor or '0'}" if major.isdigit() and (minor or "0").isdigit() else None

    @property
    def driver_major(self) -> int | None:
        """The driver's branch (``580.95.05`` → 580)."""
        head = (self.driver_version or "").split(".", 1)[0]
        return int(head) if head.isdigit() else None


def _text(value: str) -> str | None:
    value = value.strip()
    return None if value.lower() in _MISSING else value


def _number(value: str) -> int | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_nvidia_smi(output: str) -> list[SmiGpu]:
    """The GPU rows of ``NVIDIA_SMI_QUERY``'s CSV; lines that are not GPU rows (errors, banners) are skipped."""
    gpus = []
    for row in csv.reader(output.splitlines(), skipinitialspace=True):
        if len(row) < 4 or not row[0].strip().isdigit():
            continue
        fields = [*row, *[""] * (len(QUERY_FIELDS) - len(row))]
        name = _text(fields[1])
        if name is None:
            continue
        gpus.append(
            SmiGpu(
                index=int(fields[0]),
                name=name,
                memory_total_mib=_number(fields[2]),
                memory_free_mib=_number(fields[3]),
                compute_cap=_text(fields[4]),
                driver_version=_text(fields[5]),
                temperature_c=_number(fields[6]),
                mig=(_text(fields[7]) or "").lower() == "enabled",
            )
        )
    return gpus
