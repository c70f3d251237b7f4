"""macOS hosts (Apple silicon): the GPU and the unified memory Metal may use, and the service account.

Parsers of recorded outputs (pure; samples in ``tests/fixtures/macos/``):

- ``system_profiler SPDisplaysDataType -json``: the GPU's name, core count and Metal family;
- ``sysctl hw.memsize`` (or ``sysctl -n hw.memsize``): the unified memory in bytes;
- ``sysctl iogpu.wired_limit_mb`` (macOS 14+; optional): an operator's raised GPU limit, 0 when unset.

The Metal working set rule (``metal_working_set``): Metal's ``recommendedMaxWorkingSetSize``, the
memory one process may keep resident for the GPU, is about 2/3 of the RAM on Apple silicon Macs with
up to 36 GiB and 3/4 above (e.g. 16 GiB → 10.7 GiB, 32 GiB → 21.3 GiB, 64 GiB → 48 GiB,
192 GiB → 144 GiB); a positive ``iogpu.wired_limit_mb`` replaces it. rbee plans with this rule
because the probe runs no Metal code: llama.cpp reads the real value when it loads a model.
A model's need is counted as on the RAM side (size * ``MODEL_RAM_FACTOR``: weights, KV cache, buffers).

The service account is made with ``dscl`` (``service_account_script``): pyinfra's ``server.user`` runs
``useradd``, which macOS does not have.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

GiB = 2**30
SMALL_MAC_BYTES = 36 * GiB
"""Up to this much RAM Metal's working set is 2/3 of it; above, 3/4."""

MIN_LAUNCHCTL = (10, 10)
"""``launchctl bootstrap/bootout/kickstart/enable`` (the domain-target subcommands) came with macOS 10.10."""

SYSTEM_IDS = range(300, 500)
"""Where the service account's uid/gid is picked: below 500, hidden like Apple's own daemons (_www, ...)."""


@dataclass(frozen=True)
class AppleGpu:
    """One GPU ``system_profiler`` lists: ``Apple M2 Pro``, 19 cores, Metal family ``metal3``."""

    name: str
    cores: int
    metal: str
    vendor: str

    @property
    def apple_silicon(self) -> bool:
        return self.vendor == "apple" and self.name.startswith("Apple M")


@dataclass(frozen=True)
class MetalMemory:
    """The unified memory of a Mac and how much of it Metal may use (``metal_working_set``)."""

    ram_bytes: int
    working_set_bytes: int
    gpus: tuple[AppleGpu, ...] = field(default=())
    wired_limit_mb: int = 0


def parse_displays(text: str) -> list[AppleGpu]:
    """The GPUs in ``system_profiler SPDisplaysDataType -json`` output (displays attached to them are ignored)."""
    data = json.loads(text)
    gpus = []
    for entry in data.get("SPDisplaysDataType", []):
        if entry.get("sppci_device_type", "spdisplays_gpu") != "spdisplays_gpu":
            continue
        cores = str(entry.get("sppci_cores", "0"))
        gpus.append(
            AppleGpu(
                name=str(entry.get("sppci_model") or entry.get("_name", "")),
                cores=int(cores) if cores.isdigit() else 0,
                metal=str(entry.get("spdisplays_mtlgpufamilysupport", "")).removeprefix("spdisplays_"),
                vendor=str(entry.get("spdisplays_vendor", "")).removeprefix("sppci_vendor_").lower(),
            )
        )
    return gpus


def parse_sysctl_int(text: str, name: str) -> int:
    """An integer from ``sysctl NAME`` (``NAME: 123``) or ``sysctl -n NAME`` (``123``) output; 0 when absent."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        candidate = value if sep and key.strip() == name else line if not sep else ""
        if candidate.strip().isdigit():
            return int(candidate.strip())
    return 0


def metal_working_set(ram_bytes: int, wired_limit_mb: int = 0) -> int:
    """The memory Metal may use on an Apple silicon Mac (the rule in the module docstring)."""
    if wired_limit_mb > 0:
        return wired_limit_mb * 2**20
    return ram_bytes * 2 // 3 if ram_bytes <= SMALL_MAC_BYTES else ram_bytes * 3 // 4


def metal_memory(displays_json: str, memsize: str, wired_limit: str = "") -> MetalMemory:
    """A Mac's Metal memory from the recorded outputs of ``system_profiler`` and ``sysctl``."""
    ram = parse_sysctl_int(memsize, "hw.memsize")
    limit = parse_sysctl_int(wired_limit, "iogpu.wired_limit_mb")
    return MetalMemory(ram, metal_working_set(ram, limit), tuple(parse_displays(displays_json)), limit)


def metal_problems(ram_bytes: int, need_bytes: int, gpus: tuple[AppleGpu, ...] = ()) -> list[str]:
    """Why the models placed on a Metal host do not fit its GPU (empty: they fit, or the RAM is unknown).

    ``need_bytes``: the models' sizes * ``MODEL_RAM_FACTOR``; ``gpus``: from ``system_profiler`` when known.
    """
    problems = []
    if gpus and not any(g.apple_silicon and g.metal for g in gpus):
        names = ", ".join(g.name for g in gpus)
        problems.append(f"backend metal, but system_profiler lists no Apple silicon GPU with Metal ({names})")
    working_set = metal_working_set(ram_bytes)
    if ram_bytes and need_bytes > working_set:
        problems.append(
            f"Metal working set {working_set / GiB:.1f} GiB (of {ram_bytes / GiB:.1f} GiB unified memory) < "
            f"{need_bytes / GiB:.1f} GiB needed by the models placed here (size × 1.2); "
            "place fewer or smaller models, or raise iogpu.wired_limit_mb"
        )
    return problems


def macos_version(text: str) -> tuple[int, ...]:
    """``14.5`` → (14, 5); empty or garbled → ()."""
    parts = text.strip().split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) and text.strip() else ()


def launchd_problems(macos: str, arch: str) -> list[str]:
    """What a macOS host (``sw_vers -productVersion``, ``uname -m``) lacks for rbee's launchd daemons and wheels."""
    problems = []
    version = macos_version(macos)
    if not version:
        problems.append(
            "sw_vers gave no macOS version; rbee installs its services as launchd daemons "
            "and picks its wheels by macOS release"
        )
    elif version[:2] < MIN_LAUNCHCTL:
        problems.append(
            f"macOS {macos} is too old: rbee's launchd daemons need launchctl bootstrap/bootout/kickstart "
            f"(macOS >= {'.'.join(map(str, MIN_LAUNCHCTL))})"
        )
    if arch != "arm64":
        problems.append(f"macOS on {arch or 'an unknown arch'}: rbee deploys macOS hosts on Apple silicon (arm64) only")
    return problems


def account_check_command(user: str) -> str:
    """Prints ``user`` and/or ``group`` for each of the service account's records that exists."""
    q = shlex.quote(user)
    return (
        f"dscl . -read /Users/{q} UniqueID >/dev/null 2>&1 && echo user; "
        f"dscl . -read /Groups/{q} PrimaryGroupID >/dev/null 2>&1 && echo group; true"
    )


def service_account_script(user: str, home: str) -> str:
    """Create the service group and user with ``dscl`` when missing (idempotent; run as root).

    The ids are the first free one in ``SYSTEM_IDS`` (both uid and gid spaces); the user has no
    password, no login shell, is hidden, and its home is the state folder (as on Linux).
    """
    q, h = shlex.quote(user), shlex.quote(home)
    first, last = SYSTEM_IDS.start, SYSTEM_IDS.stop - 1
    return f"""set -e
used=$( {{ dscl . -list /Users UniqueID; dscl . -list /Groups PrimaryGroupID; }} | awk '{{print $2}}' )
free_id() {{
  i={first}
  while [ "$i" -le {last} ]; do
    printf '%s\\n' "$used" | grep -qx "$i" || {{ echo "$i"; return 0; }}
    i=$((i+1))
  done
  echo "no free id in {first}-{last} for the rbee service account" >&2; return 1
}}
if ! dscl . -read /Groups/{q} PrimaryGroupID >/dev/null 2>&1; then
  gid=$(free_id); used="$used
$gid"
  dscl . -create /Groups/{q}
  dscl . -create /Groups/{q} PrimaryGroupID "$gid"
  dscl . -create /Groups/{q} RealName "rbee service"
  dscl . -create /Groups/{q} Password '*'
fi
if ! dscl . -read /Users/{q} UniqueID >/dev/null 2>&1; then
  uid=$(free_id)
  gid=$(dscl . -read /Groups/{q} PrimaryGroupID | awk '{{print $2}}')
  dscl . -create /Users/{q}
  dscl . -create /Users/{q} UniqueID "$uid"
  dscl . -create /Users/{q} PrimaryGroupID "$gid"
  dscl . -create /Users/{q} NFSHomeDirectory {h}
  dscl . -create /Users/{q} UserShell /usr/bin/false
  dscl . -create /Users/{q} RealName "rbee service"
  dscl . -create /Users/{q} Password '*'
  dscl . -create /Users/{q} IsHidden 1
fi
"""
