"""Build an engine wheel on a builder host: upload the kit, build in the background, watch, fetch back.

Used when the control machine cannot build a feature set itself (another OS, arch, libc, Python or a
GPU backend). The build runs detached on the host (``nohup``), so a dropped SSH connection does not
kill it and a later deploy attaches to a build still running; its progress (CMake/Ninja's
``[n/N]``) is reported every few seconds. The wheel comes back into the control machine's cache
(``rbee.engine.wheelcache.store_wheel``: tagged, slimmed, recorded); a failed build raises
``EngineBuildError`` with the tail of its log.

The host is reached through a ``Remote`` (pyinfra's connection in the deploy), so this module
only decides what to run.
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rbee.engine.build_kit import BuildKit
from rbee.engine.cuda import BUILD_TOOLKIT, PYPI_CUDA
from rbee.engine.features import FeatureSet
from rbee.engine.wheelcache import DEFAULT_CACHE, EngineBuildError, log_tail, store_wheel

_PROGRESS = re.compile(r"\[(\d+)/(\d+)\]")
DEFAULT_TIMEOUT_S = 3 * 3600.0
"""A CUDA build for one architecture takes about 31 minutes on 2 cores."""


class Remote(Protocol):
    """A shell on a host: ``run`` returns the exit status and the combined output."""

    name: str

    def run(self, command: str, timeout: float | None = None) -> tuple[int, str]: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...


@dataclass(frozen=True)
class BuildPlace:
    """Where on the builder host things go: ``<work>/kit``, ``<work>/venv-py3.13``, ``<work>/<key>/``."""

    work: str
    features: FeatureSet

    @property
    def kit(self) -> str:
        return f"{self.work}/kit"

    @property
    def venv(self) -> str:
        return f"{self.work}/venv-py{self.features.python}"

    @property
    def folder(self) -> str:
        return f"{self.work}/{self.features.key}"


# A C++ compiler, installed with the host's package manager when missing (macOS: the command line tools).
COMPILER_CHECK = "command -v c++ || command -v g++ || command -v clang++"
COMPILER_INSTALL = (
    "if command -v apt-get >/dev/null; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++ "
    "|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++; }; "
    "elif command -v dnf >/dev/null; then dnf install -y gcc-c++; "
    "elif command -v zypper >/dev/null; then zypper --non-interactive install gcc-c++; "
    "elif command -v apk >/dev/null; then apk add g++; "
    'elif [ "$(uname -s)" = Darwin ]; then '
    "echo 'install the Xcode command line tools: xcode-select --install'; exit 1; "
    "else echo 'no known package manager: install a C++ compiler (g++ or clang++)'; exit 1; fi"
)

# Makes the PyPI CUDA toolkit a root CMake accepts (see ../shared/notes/cuda-build.md): a lib64 link and
# unversioned links to the runtime and cuBLAS libraries.
_CUDA_FIXUP = (
    "import glob, os, sys; root = sys.argv[1]; lib = os.path.join(root, 'lib')\n"
    "os.path.exists(os.path.join(root, 'lib64')) or os.symlink('lib', os.path.join(root, 'lib64'))\n"
    "for name in ('libcudart', 'libcublas', 'libcublasLt'):\n"
    "    found = sorted(glob.glob(os.path.join(lib, name + '.so.*')))\n"
    "    link = os.path.join(lib, name + '.so')\n"
    "    if found and not os.path.exists(link): os.symlink(os.path.basename(found[0]), link)\n"
)


def _q(text: str) -> str:
    return shlex.quote(text)


def _check(remote: Remote, command: str, what: str, timeout: float | None = 600.0) -> str:
    status, output = remote.run(command, timeout)
    if status != 0:
        raise EngineBuildError(f"{what} failed on {remote.name} (exit {status}):\n{log_tail(output, 20)}")
    return output


def upload_kit(remote: Remote, kit: BuildKit, place: BuildPlace) -> int:
    """Send the kit files the host lacks (compared by size); returns how many were sent."""
    listing = _check(
        remote,
        f"mkdir -p {_q(place.kit)} {_q(place.folder)} && cd {_q(place.kit)} && "
        'for f in *; do [ -f "$f" ] && echo "$(wc -c < "$f") $f"; done; true',
        "listing the build kit",
    )
    there = {}
    for line in listing.splitlines():
        size, _, name = line.strip().partition(" ")
        if size.isdigit():
            there[name] = int(size)
    sent = 0
    for name in kit.files:
        local = kit.folder / name
        if there.get(name) != local.stat().st_size:
            remote.put(local, f"{place.kit}/{name}")
            sent += 1
    return sent


def _cuda_root(remote: Remote, place: BuildPlace, features: FeatureSet) -> str:
    """Install the PyPI toolkit into the build venv (or find the host's); the toolkit's root folder."""
    if features.cuda == PYPI_CUDA:
        pip = f"{_q(place.venv)}/bin/pip install --quiet --no-index --find-links {_q(place.kit)}"
        _check(remote, f"{pip} {_q(BUILD_TOOLKIT)}", "installing the CUDA toolkit from the kit", timeout=1800)
        root = (
            _check(
                remote,
                f"{_q(place.venv)}/bin/python -c "
                "'import nvidia, os; print(os.path.join(nvidia.__path__[0], \"cu13\"))'",
                "finding the CUDA toolkit",
            )
            .strip()
            .splitlines()[-1]
        )
        _check(remote, f"{_q(place.venv)}/bin/python -c {_q(_CUDA_FIXUP)} {_q(root)}", "preparing the CUDA toolkit")
        return root
    nvcc = _check(remote, "command -v nvcc || ls /usr/local/cuda/bin/nvcc", "finding the host's nvcc").strip()
    return nvcc.splitlines()[-1].rsplit("/bin/", 1)[0]


def _start_command(place: BuildPlace, jobs: str, cuda_root: str | None = None) -> str:
    """The shell line that starts the build in the background (``cuda_root``: the toolkit of a CUDA build)."""
    features = place.features
    cmake_args = list(features.cmake_args)
    exports = ""
    if cuda_root is not None:  # every value quoted: the prefix comes from the spec
        nvcc = f"{cuda_root}/bin/nvcc"
        cmake_args += [f"-DCUDAToolkit_ROOT={cuda_root}", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
        exports = (
            f"export CUDACXX={_q(nvcc)} CUDAToolkit_ROOT={_q(cuda_root)}; "
            f'export PATH={_q(cuda_root + "/bin")}:"$PATH"; '
        )
    build = (
        f"{exports}export CMAKE_ARGS={_q(' '.join(cmake_args))} CMAKE_BUILD_PARALLEL_LEVEL={_q(jobs)}; "
        f"{_q(place.venv)}/bin/pip wheel -v --no-index --find-links {_q(place.kit)} --no-deps --no-cache-dir "
        f"--no-binary llama-cpp-python -w out llama-cpp-python=={features.version} > build.log 2>&1; "
        "echo $? > build.rc"
    )
    # only the build goes to the background (not the whole list): the session ends at once, and an SSH
    # client waiting for its channel to close is not held for the length of the build
    return (
        f"cd {_q(place.folder)} && rm -rf out build.log build.rc && "
        f"{{ nohup sh -c {_q(build)} > /dev/null 2>&1 < /dev/null & echo $! > build.pid; }}"
    )


def _running(remote: Remote, place: BuildPlace) -> bool:
    """A build of this feature set still running on the host (a deploy interrupted while it built)."""
    folder = _q(place.folder)
    status, _ = remote.run(
        f'[ -f {folder}/build.pid ] && [ ! -f {folder}/build.rc ] && kill -0 "$(cat {folder}/build.pid)"', 30
    )
    return status == 0


def _watch(remote: Remote, place: BuildPlace, progress: Callable[[str], None], poll_s: float, timeout_s: float) -> str:
    """Wait for ``build.rc``; report ``[n/N]`` as it moves. Returns the log (raises on failure)."""
    started = time.monotonic()
    folder = _q(place.folder)
    last = ""
    last_said = 0.0
    while True:
        _, output = remote.run(
            f"cat {folder}/build.rc 2>/dev/null; echo '<rbee-log>'; tail -c 4000 {folder}/build.log", 60
        )
        rc_text, _, tail = output.partition("<rbee-log>")
        elapsed = time.monotonic() - started
        steps = _PROGRESS.findall(tail)
        now = f"[{steps[-1][0]}/{steps[-1][1]}]" if steps else "preparing"
        if now != last or elapsed - last_said >= 30:
            progress(f"engine {place.features.key} building on {remote.name}: {now} ({elapsed / 60:.1f} min)")
            last, last_said = now, elapsed
        if rc_text.strip():
            break
        if elapsed > timeout_s:
            remote.run(f'kill "$(cat {folder}/build.pid)" 2>/dev/null', 30)
            raise EngineBuildError(f"the build of {place.features.key} on {remote.name} took over {timeout_s:.0f} s")
        time.sleep(poll_s)
    _, log = remote.run(f"cat {folder}/build.log", 120)
    status = rc_text.strip().splitlines()[0]
    if status != "0":
        raise EngineBuildError(
            f"llama-cpp-python {place.features.version} ({place.features.key}) failed to build on {remote.name} "
            f"(exit {status}); the end of {place.folder}/build.log:\n{log_tail(log, 40)}"
        )
    return log


def build_on_host(
    remote: Remote,
    features: FeatureSet,
    kit: BuildKit,
    work: str,
    cache_dir: Path = DEFAULT_CACHE,
    *,
    progress: Callable[[str], None] = print,
    poll_s: float = 5.0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Build ``features`` on ``remote`` under ``work`` and file the wheel in ``cache_dir``; returns it."""
    place = BuildPlace(work, features)
    started = time.monotonic()
    if not _running(remote, place):
        sent = upload_kit(remote, kit, place)
        progress(f"engine {features.key}: build kit on {remote.name} ({sent} of {len(kit.files)} files sent)")
        status, _ = remote.run(COMPILER_CHECK, 30)
        if status != 0:
            progress(f"engine {features.key}: installing a C++ compiler on {remote.name}")
            _check(remote, COMPILER_INSTALL, "installing a C++ compiler", timeout=1800)
        python = "python3"
        _check(
            remote,
            f"{_q(place.venv)}/bin/pip --version >/dev/null 2>&1 || {{ rm -rf {_q(place.venv)} && "
            f"{python} -m venv {_q(place.venv)}; }}",
            "creating the build venv",
        )
        cuda_root = _cuda_root(remote, place, features) if features.backend == "cuda" else None
        jobs = _check(remote, "getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu", "counting CPUs").strip()
        _check(remote, _start_command(place, jobs.splitlines()[-1] or "2", cuda_root), "starting the build")
    else:
        progress(f"engine {features.key}: a build is already running on {remote.name}; waiting for it")
    log = _watch(remote, place, progress, poll_s, timeout_s)
    listing = _check(remote, f"ls {_q(place.folder)}/out/*.whl", "finding the built wheel").split()
    with tempfile.TemporaryDirectory(prefix="rbee-fetch-") as tmp:
        raw = Path(tmp) / listing[-1].rsplit("/", 1)[-1]
        remote.get(listing[-1], raw)
        wheel = store_wheel(raw, features, log, cache_dir, where=remote.name, seconds=time.monotonic() - started)
    remote.run(f"rm -rf {_q(place.folder)}/out", 60)
    return wheel
