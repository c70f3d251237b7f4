"""Custom pyinfra facts of rbee hosts (each a command and a parser, no side effects)."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host

from rbee.deploy.probe import PROBE_SCRIPT, HostFacts, parse_probe


def host_data(target: Host) -> dict[str, Any]:
    """All data of a host as a plain dict (pyinfra's ``HostData.dict`` is untyped)."""
    data: dict[str, Any] = target.data.dict()  # type: ignore[no-untyped-call]
    return data


class RbeeProbe(FactBase[HostFacts]):
    """OS, arch, Python, RAM, disk, systemd and GPUs of a host, in one round trip."""

    def command(self, prefix: str) -> str:
        return f"RBEE_PREFIX={shlex.quote(prefix)}; export RBEE_PREFIX\n{PROBE_SCRIPT}"

    def process(self, output: list[str]) -> HostFacts:
        return parse_probe("\n".join(output))

    @staticmethod
    def default() -> HostFacts:
        return HostFacts()


class StampFile(FactBase[str]):
    """The content of a small stamp file (empty when missing): what an earlier deploy installed."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return "\n".join(output).strip()

    @staticmethod
    def default() -> str:
        return ""


class WorkerInstances(FactBase[list[str]]):
    """Names of the worker instances configured on a host (``/etc/rbee/workers/*.env``)."""

    def command(self, folder: str) -> str:
        return f"ls {shlex.quote(folder)} 2>/dev/null | sed -n 's/\\.env$//p' || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())

    @staticmethod
    def default() -> list[Any]:
        return []
