"""Prove the CUDA engine build without a GPU (about 35 minutes on 2 cores; not part of ``scripts/test``).

Boots one test host (``rbee testhosts``), builds the CUDA 13 wheel for one compute capability on it
through the deploy's builder path (``rbee.engine.remote_build``: kit with the sdist, build tools and
the CUDA toolkit from PyPI; the host has only Python and g++), then checks what can be checked
without a driver:

1. the wheel holds ``libggml-cuda`` once, and its size;
2. ``libggml-cuda`` links the CUDA runtime and cuBLAS, never the driver's ``libcuda``;
3. on the host, ``import llama_cpp`` fails without the runtime libraries on the library path and
   succeeds with the path rbee's units set (``rbee.deploy.templates``: the worker's LD_LIBRARY_PATH);
   ``llama_supports_gpu_offload()`` is then false and the missing driver is reported cleanly.

``llama_supports_gpu_offload()`` true and layers on a GPU can only be shown on a machine with one.
Usage: ``scripts/cuda-build-check [--arch 89] [--keep]``; prints each figure and exits non-zero on a failed check.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile

from rbee.deploy.wheelhouse import WheelhouseTarget, build_wheelhouse
from rbee.engine.build_kit import build_kit
from rbee.engine.cuda import RUNTIME_LIB_DIR, RUNTIME_TOOLKIT
from rbee.engine.features import FeatureSet
from rbee.engine.remote_build import BuildPlace, build_on_host, upload_kit
from rbee.engine.ssh_remote import SshRemote
from rbee.engine.wheelcache import DEFAULT_CACHE, cached_wheel
from rbee.testhosts import TestHosts

WORK = "/opt/rbee/build"
VENV = "/opt/rbee/cuda-check-venv"


def say(line: str) -> None:
    print(f"--> {line}", file=sys.stderr, flush=True)


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        failures.append(what)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="89", help="CMAKE_CUDA_ARCHITECTURES (default 89: Ada)")
    parser.add_argument("--keep", action="store_true", help="leave the test host running")
    args = parser.parse_args()
    hosts = TestHosts(log=say)
    with hosts.session_lease():
        hosts.up(1)
        try:
            return run_checks(hosts, args.arch)
        finally:
            if not args.keep:
                hosts.down()


def run_checks(hosts: TestHosts, arch: str) -> int:
    probe = hosts.ssh(
        "h1", "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'; getconf GNU_LIBC_VERSION"
    )
    python, libc = probe.stdout.split()[0], probe.stdout.split()[-1]
    features = FeatureSet("cuda", "x86_64", python, "0.3.36", libc=f"glibc{libc}", cuda="13", cuda_architectures=arch)
    remote = SshRemote("h1", "h1", ["-F", str(hosts.paths.ssh_config)])
    failures: list[str] = []
    started = time.monotonic()
    wheel = cached_wheel(features, DEFAULT_CACHE)
    if wheel is None:
        kit = build_kit(features)
        say(f"kit {kit.folder.name}: {sum((kit.folder / f).stat().st_size for f in kit.files) / 2**20:.0f} MiB")
        wheel = build_on_host(remote, features, kit, WORK, DEFAULT_CACHE, progress=say, poll_s=15)
        print(f"build of {features.key} on h1: {(time.monotonic() - started) / 60:.1f} min", flush=True)
    else:
        kit = build_kit(features)
        say(f"using the cached {wheel}")
    with zipfile.ZipFile(wheel) as archive:
        cuda_libs = [n for n in archive.namelist() if "libggml-cuda" in n]
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.0f} MB; libggml-cuda entries: {cuda_libs}", flush=True)
    check(len(cuda_libs) == 1, "the wheel holds libggml-cuda exactly once", failures)

    remote.run(f"mkdir -p {WORK}/kit {WORK}/wheels", 60)
    upload_kit(remote, kit, BuildPlace(WORK, features))  # the runtime wheels come from the same kit
    house = build_wheelhouse(WheelhouseTarget(features.python, "linux", features.arch))
    for wheel_file in house.folder.glob("*.whl"):  # the engine's own Python dependencies (numpy, jinja2, ...)
        remote.put(wheel_file, f"{WORK}/wheels/{wheel_file.name}")
    remote.put(wheel, f"{WORK}/{wheel.name}")
    pip = f"{VENV}/bin/pip install --quiet --no-index --find-links {WORK}/kit --find-links {WORK}/wheels"
    status, out = remote.run(
        f"rm -rf {VENV} && python3 -m venv {VENV} && {pip} '{RUNTIME_TOOLKIT}' && {pip} {WORK}/{wheel.name}",
        1800,
    )
    check(status == 0, f"the wheel and {RUNTIME_TOOLKIT} install on h1 {out.strip()[-300:]}", failures)
    site = remote.run(f"{VENV}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'", 60)[1]
    lib_dir = f"{site.strip().splitlines()[-1]}/{RUNTIME_LIB_DIR}"
    needed = remote.run(f"readelf -d {site.strip().splitlines()[-1]}/llama_cpp/lib/libggml-cuda.so* | grep NEEDED", 60)[
        1
    ]
    print(needed, flush=True)
    check(
        "libcudart.so" in needed and "libcublas.so" in needed,
        "libggml-cuda needs the CUDA runtime and cuBLAS",
        failures,
    )
    check(
        "NEEDED" in needed and "libcuda.so" not in needed, "libggml-cuda does not link the driver's libcuda", failures
    )
    snippet = "import llama_cpp; print('offload', bool(llama_cpp.llama_supports_gpu_offload()))"
    bare, _ = remote.run(f'{VENV}/bin/python -c "{snippet}"', 120)
    check(bare != 0, "without the runtime libraries on the library path, import llama_cpp fails", failures)
    status, out = remote.run(f'LD_LIBRARY_PATH={lib_dir} {VENV}/bin/python -c "{snippet}" 2>&1', 120)
    print(out.strip()[-800:], flush=True)
    check(status == 0 and "offload False" in out, f"with LD_LIBRARY_PATH={lib_dir}: imports, no offload", failures)
    check("driver" in out.lower() or "no cuda" in out.lower(), "the missing driver is reported", failures)
    print(f"checks: {'all passed' if not failures else f'{len(failures)} failed'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
