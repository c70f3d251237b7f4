"""SSH preflight: one shell probe per host, parsed into facts, judged against what rbee needs.

The probe is plain POSIX sh (``PROBE_SCRIPT``) so it runs on any Linux or macOS host;
``parse_probe`` turns its ``key=value`` output into a ``HostFacts``, and ``judge`` lists
the problems that stop a host from being deployed. Both are pure and tested on
recorded outputs (``tests/deploy/fixtures/``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from rbee.engine.detect import NVIDIA_SMI_QUERY, DetectedGpu, choose_backend, parse_nvidia_smi
from rbee.engine.features import EngineBackend

MIN_PYTHON = (3, 11)
MIN_GLIBC = (2, 28)
"""The oldest glibc the wheelhouse's binary wheels install on (numpy and others ship manylinux_2_28)."""

PROBE_SCRIPT = r"""
set -- $(uname -s -m -r); echo "os=$1"; echo "arch=$3"; echo "kernel=$2"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "distro=$ID $VERSION_ID"; fi
g=$(getconf GNU_LIBC_VERSION 2>/dev/null); echo "glibc=${g#* }"
command -v sw_vers >/dev/null 2>&1 && echo "macos=$(sw_vers -productVersion)"
[ ! -r /proc/meminfo ] && command -v sysctl >/dev/null 2>&1 &&
  sysctl -n hw.memsize 2>/dev/null | sed 's/^/ram_total_bytes=/'
for c in c++ g++ clang++; do command -v $c >/dev/null 2>&1 && { echo "compiler=$c"; break; }; done
for n in nvcc /usr/local/cuda/bin/nvcc; do
  command -v $n >/dev/null 2>&1 && { echo "nvcc=$($n --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"; break; }
done
if command -v python3 >/dev/null 2>&1; then
  set -- $(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])
import venv, ensurepip; print("yes")' 2>/dev/null)
  echo "python=$1"; [ "$2" = yes ] && echo "python_venv=yes" || echo "python_venv=no"
else echo "python=none"; fi
[ -r /proc/meminfo ] &&
  awk '/^MemTotal:/{print "ram_total_kb=" $2} /^MemAvailable:/{print "ram_available_kb=" $2}' /proc/meminfo
d="$RBEE_PREFIX"; while [ -n "$d" ] && [ ! -d "$d" ]; do d=${d%/*}; done
echo "disk_free_kb=$(df -Pk "${d:-/}" | awk 'NR==2{print $4}')"
[ -d /run/systemd/system ] && echo "systemd=yes" || echo "systemd=no"
if command -v nvidia-smi >/dev/null 2>&1; then
  @NVIDIA_SMI_QUERY@ 2>/dev/null | sed 's/^/gpu=/'
fi
echo "probe=done"
""".replace("@NVIDIA_SMI_QUERY@", NVIDIA_SMI_QUERY)


def probe_input(prefix: str) -> str:
    """The probe as the standard input of ``sh -s`` on a host (``RBEE_PREFIX`` set: its disk is the one measured)."""
    return f"RBEE_PREFIX={shlex.quote(prefix)}; export RBEE_PREFIX\n{PROBE_SCRIPT}"


@dataclass
class HostFacts:
    """What the probe found on a host."""

    os: str = ""
    arch: str = ""
    kernel: str = ""
    distro: str = ""
    python: tuple[int, ...] | None = None
    python_venv: bool = False
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    disk_free_bytes: int = 0
    systemd: bool = False
    gpus: list[DetectedGpu] = field(default_factory=list)
    glibc: str = ""
    macos: str = ""
    compiler: str = ""
    nvcc: str = ""
    complete: bool = False

    @property
    def libc(self) -> str:
        """The libc baseline in ``FeatureSet.libc`` form: ``glibc2.36``, ``macos14.0`` (major), or empty."""
        if self.os == "Darwin" and self.macos:
            return f"macos{self.macos.split('.')[0]}.0"
        return f"glibc{self.glibc}" if self.glibc else ""

    @property
    def python_text(self) -> str:
        return ".".join(map(str, self.python)) if self.python else "none"

    @property
    def python_abi(self) -> str:
        """``3.11`` style version, the engine's and the wheelhouse's target."""
        return f"{self.python[0]}.{self.python[1]}" if self.python else "none"

    def backend_for(self, wanted: str) -> EngineBackend:
        """The spec's backend, with ``auto`` resolved from the GPUs found."""
        if wanted in ("cpu", "cuda", "metal"):
            return wanted  # type: ignore[return-value]
        return choose_backend(self.os, self.arch, self.gpus)


def parse_probe(output: str) -> HostFacts:
    """Turn the probe's ``key=value`` lines into ``HostFacts`` (unknown lines are ignored)."""
    facts = HostFacts()
    gpu_lines = []
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if key == "gpu":
            gpu_lines.append(value)
        elif key in ("os", "arch", "kernel", "distro", "glibc", "macos", "compiler", "nvcc"):
            setattr(facts, key, value)
        elif key == "python" and value and value != "none":
            facts.python = tuple(int(p) for p in value.split(".") if p.isdigit())
        elif key == "python_venv":
            facts.python_venv = value == "yes"
        elif key in ("ram_total_kb", "ram_available_kb", "disk_free_kb") and value.isdigit():
            setattr(facts, key.replace("_kb", "_bytes"), int(value) * 1024)
        elif key == "ram_total_bytes" and value.isdigit():
            facts.ram_total_bytes = int(value)
        elif key == "systemd":
            facts.systemd = value == "yes"
        elif key == "probe":
            facts.complete = value == "done"
    facts.gpus = parse_nvidia_smi("\n".join(gpu_lines))
    return facts


@dataclass(frozen=True)
class Requirements:
    """What a host must offer; the RAM figure covers the models placed on it."""

    backend: str
    gpus: list[int] | str
    min_ram_bytes: int
    min_disk_bytes: int


def judge(facts: HostFacts, needs: Requirements) -> list[str]:
    """Every reason this host cannot be deployed (empty: good to go)."""
    problems = []
    if not facts.complete:
        problems.append("the preflight probe did not finish (is /bin/sh usable?)")
    if facts.os not in ("Linux", "Darwin"):
        problems.append(f"unsupported OS {facts.os or 'unknown'!r} (rbee runs on Linux and macOS)")
    if facts.python is None:
        problems.append("python3 is not installed; install Python >= 3.11 (e.g. apt-get install python3 python3-venv)")
    elif facts.python[:2] < MIN_PYTHON:
        problems.append(f"python3 is {facts.python_text}; rbee needs >= {'.'.join(map(str, MIN_PYTHON))}")
    elif not facts.python_venv:
        problems.append("python3 has no venv module; install python3-venv")
    glibc = tuple(int(p) for p in facts.glibc.split(".") if p.isdigit())
    if facts.os == "Linux" and glibc and glibc < MIN_GLIBC:
        problems.append(
            f"glibc {facts.glibc} is older than {'.'.join(map(str, MIN_GLIBC))}, the oldest the wheels rbee installs "
            "support (manylinux_2_28); use a newer release of the OS"
        )
    if facts.os == "Linux" and not facts.systemd:
        problems.append("systemd is not running (PID 1); rbee installs its services as systemd units")
    if facts.os == "Darwin":
        from rbee.deploy.macos import launchd_problems  # macOS specifics live there

        problems += launchd_problems(facts.macos, facts.arch)
    if facts.ram_total_bytes and facts.ram_total_bytes < needs.min_ram_bytes:
        problems.append(
            f"RAM {facts.ram_total_bytes / 2**30:.1f} GiB < {needs.min_ram_bytes / 2**30:.1f} GiB needed "
            "by the models placed here (size × 1.2 + reserve)"
        )
    if facts.disk_free_bytes and facts.disk_free_bytes < needs.min_disk_bytes:
        problems.append(
            f"free disk {facts.disk_free_bytes / 2**30:.1f} GiB < {needs.min_disk_bytes / 2**30:.1f} GiB needed"
        )
    backend = facts.backend_for(needs.backend)
    if needs.backend == "cuda" and not facts.gpus:
        problems.append("backend cuda, but nvidia-smi lists no GPU (driver missing?); use backend: cpu explicitly")
    if needs.backend == "metal" and not (facts.os == "Darwin" and facts.arch == "arm64"):
        problems.append(f"backend metal needs macOS on Apple silicon, found {facts.os} {facts.arch}")
    if backend == "cuda" and isinstance(needs.gpus, list):
        present = {g.index for g in facts.gpus}
        missing = [i for i in needs.gpus if i not in present]
        if missing:
            problems.append(f"GPU index(es) {missing} not present; nvidia-smi lists {sorted(present)}")
    return problems
