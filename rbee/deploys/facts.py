"""Custom pyinfra facts of rbee hosts (each a command and a parser, no side effects)."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host

from rbee.deploy.host_state import HostState, parse_state, state_script
from rbee.deploy.layout import HostLayout
from rbee.deploy.probe import PROBE_SCRIPT, HostFacts, parse_probe, probe_input


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


class RbeeHostState(FactBase[tuple[HostFacts, HostState]]):
    """The probe and everything a deploy compares (``rbee.deploy.host_state``), in one round trip."""

    def command(self, prefix: str, user: str) -> str:
        return f"{probe_input(prefix)}\n{state_script(HostLayout(prefix), user)}"

    def process(self, output: list[str]) -> tuple[HostFacts, HostState]:
        text = "\n".join(output)
        return parse_probe(text), parse_state(text)

    @staticmethod
    def default() -> tuple[HostFacts, HostState]:
        return HostFacts(), HostState()
