"""Engine feature sets on recorded GPU outputs, wheel tags against hosts, and the builder's failure path."""

from __future__ import annotations

import subprocess
import tarfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest
from wheel.wheelfile import WheelFile  # type: ignore[import-untyped]

from rbee.deploy.ansible_steps import _builder, prepare_engines
from rbee.deploy.engine_plan import builds_here, host_features
from rbee.deploy.probe import HostFacts, parse_probe
from rbee.engine.build_kit import BuildKit
from rbee.engine.features import FeatureSet
from rbee.engine.remote_build import BuildPlace, _running, _start_command, build_on_host
from rbee.engine.wheel_tags import finish_wheel, wheel_problem
from rbee.engine.wheelcache import EngineBuildError, builds
from rbee_runtime.common.nvidia_smi import parse_nvidia_smi

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"


def facts_with(recording: str, *, nvcc: str = "", python: str = "3.11.2", glibc: str = "2.36") -> HostFacts:
    gpus = [f"gpu={line}" for line in (FIXTURES / recording).read_text().splitlines() if line.strip()]
    lines = ["os=Linux", "arch=x86_64", f"python={python}", "python_venv=yes", f"glibc={glibc}", "systemd=yes"]
    return parse_probe("\n".join([*lines, *([f"nvcc={nvcc}"] if nvcc else []), *gpus, "probe=done"]))


def test_two_gpu_models_give_two_feature_sets_with_their_cuda_architectures() -> None:
    a100_l4 = facts_with("nvidia-smi-a100-l4-full.txt")
    both, problems = host_features(a100_l4, "cuda", "0.3.36", [0, 1])
    only_a100, _ = host_features(a100_l4, "cuda", "0.3.36", [0])
    h100, _ = host_features(facts_with("nvidia-smi-h100-mig-full.txt"), "cuda", "0.3.36", [0, 1])
    assert problems == []
    assert "-DCMAKE_CUDA_ARCHITECTURES=80;89" in both.cmake_args and both.cuda == "13"
    assert "-DCMAKE_CUDA_ARCHITECTURES=80" in only_a100.cmake_args
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in h100.cmake_args
    assert "-DGGML_CUDA_NO_VMM=ON" in h100.cmake_args
    assert len({both.key, only_a100.key, h100.key}) == 3
    assert both.key.startswith("0.3.36-cuda13-sm80.89-linux_x86_64-glibc2.36-py3.11-")


def test_a_driver_too_old_for_the_pypi_toolkit_is_refused_with_what_to_do() -> None:
    _, problems = host_features(facts_with("nvidia-smi-3090-old-driver.txt"), "cuda", "0.3.36", [0])
    (problem,) = problems
    assert "NVIDIA driver 535 is too old for CUDA 13" in problem and "R580" in problem
    assert "install a CUDA 12 toolkit" in problem and "backend: cpu" in problem


def test_an_old_driver_with_its_own_cuda_12_toolkit_builds_with_that_toolkit() -> None:
    features, problems = host_features(
        facts_with("nvidia-smi-3090-old-driver.txt", nvcc="12.2"),
        "cuda",
        "0.3.36",
        [0],
    )
    assert problems == [] and features.cuda == "12" and "-DCMAKE_CUDA_ARCHITECTURES=86" in features.cmake_args


def test_na_fields_keep_the_gpu() -> None:
    gpus = parse_nvidia_smi((FIXTURES / "nvidia-smi-h100-mig-full.txt").read_text())
    assert [(g.index, g.mig, g.memory_free_mib, g.temperature_c, g.sm) for g in gpus] == [
        (0, True, None, None, "90"),
        (1, False, 80475, 38, "90"),
    ]


def test_the_control_machine_builds_only_its_own_feature_set() -> None:
    control = FeatureSet("cpu", "x86_64", "3.11", "0.3.36", libc="glibc2.36")
    assert builds_here(control, control)
    for other in (
        FeatureSet("cpu", "x86_64", "3.13", "0.3.36", libc="glibc2.41"),
        FeatureSet("cpu", "aarch64", "3.11", "0.3.36", libc="glibc2.36"),
        FeatureSet("cuda", "x86_64", "3.11", "0.3.36", libc="glibc2.36", cuda="13", cuda_architectures="89"),
        FeatureSet("metal", "arm64", "3.11", "0.3.36", os="darwin", libc="macos14.0"),
    ):
        assert not builds_here(other, control), other.key


def _raw_wheel(folder: Path) -> Path:
    """A wheel laid out like a llama-cpp-python build: each library three times, copies outside the package."""
    path = folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with WheelFile(path, "w") as wheel:
        wheel.writestr("llama_cpp/__init__.py", "__version__ = '0.3.36'\n")
        for lib in ("libggml-base", "libggml", "libllama"):
            for suffix in (".so", ".so.0", ".so.0.5.0"):
                wheel.writestr(f"llama_cpp/lib/{lib}{suffix}", b"\x7fELF" + lib.encode() * 1000)
                wheel.writestr(f"lib/{lib}{suffix}", b"\x7fELF" + lib.encode() * 1000)
        wheel.writestr("include/llama.h", "/* header */")
        info = "llama_cpp_python-0.3.36.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-linux_x86_64\n")
    return path


def test_a_finished_wheel_is_tagged_for_its_feature_set_and_keeps_each_library_once(tmp_path: Path) -> None:
    features = FeatureSet("cpu", "x86_64", "3.13", "0.3.36", libc="glibc2.41")
    (tmp_path / "out").mkdir()
    wheel = finish_wheel(_raw_wheel(tmp_path), features, tmp_path / "out")
    assert wheel.name == "llama_cpp_python-0.3.36-cp313-none-manylinux_2_41_x86_64.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if "/lib/" in n or n.startswith(("lib/", "include/")))
        assert (
            "Tag: cp313-none-manylinux_2_41_x86_64" in archive.read("llama_cpp_python-0.3.36.dist-info/WHEEL").decode()
        )
        record = archive.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode()
    assert names == [
        "llama_cpp/lib/libggml-base.so.0",  # what NEEDED names
        "llama_cpp/lib/libggml.so",  # what Python opens
        "llama_cpp/lib/libggml.so.0",
        "llama_cpp/lib/libllama.so",
        "llama_cpp/lib/libllama.so.0",
    ]
    assert all(name in record for name in names)


@pytest.mark.parametrize(
    ("host", "fits"),
    [
        (FeatureSet("cpu", "x86_64", "3.13", "0.3.36", libc="glibc2.41"), True),
        (FeatureSet("cpu", "x86_64", "3.13", "0.3.36", libc="glibc2.42"), True),  # newer glibc takes older wheels
        (FeatureSet("cpu", "x86_64", "3.11", "0.3.36", libc="glibc2.41"), False),  # another Python
        (FeatureSet("cpu", "x86_64", "3.13", "0.3.36", libc="glibc2.36"), False),  # an older glibc
        (FeatureSet("cpu", "aarch64", "3.13", "0.3.36", libc="glibc2.41"), False),
    ],
)
def test_a_wheel_that_does_not_fit_a_host_is_refused_naming_both(host: FeatureSet, fits: bool) -> None:
    name = "llama_cpp_python-0.3.36-cp313-none-manylinux_2_41_x86_64.whl"
    problem = wheel_problem(name, "h2", host)
    if fits:
        assert problem is None
    else:
        assert problem is not None and name in problem and "h2" in problem and f"Python {host.python}" in problem
        assert host.libc in problem and host.arch in problem


class LocalRemote:
    """The builder protocol on this machine's shell (the pyinfra adapter does the same over SSH)."""

    name = "local-builder"

    def run(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr

    def put(self, local: Path, remote: str) -> None:
        Path(remote).write_bytes(local.read_bytes())

    def get(self, remote: str, local: Path) -> None:
        local.write_bytes(Path(remote).read_bytes())


def test_a_failing_build_raises_with_the_tail_of_its_log_and_caches_nothing(tmp_path: Path) -> None:
    kit_dir = tmp_path / "kit"
    kit_dir.mkdir()
    broken = kit_dir / "llama_cpp_python-0.3.36.tar.gz"  # a source tree whose build backend cannot be found
    src = tmp_path / "llama_cpp_python-0.3.36"
    src.mkdir()
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["rbee-no-such-backend"]\n')
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n")
    with tarfile.open(broken, "w:gz") as archive:
        archive.add(src, arcname=src.name)
    features = FeatureSet("cpu", "x86_64", "3.11", "0.3.36", libc="glibc2.36")
    said: list[str] = []
    cache = tmp_path / "cache"
    with pytest.raises(EngineBuildError) as caught:
        build_on_host(
            LocalRemote(),
            features,
            BuildKit(kit_dir, (broken.name,)),
            str(tmp_path / "work"),
            cache,
            progress=said.append,
            poll_s=0.2,
        )
    message = str(caught.value)
    assert "failed to build on local-builder" in message and "build.log" in message
    assert "rbee-no-such-backend" in message  # pip's own words, from the end of the log
    assert any("building on local-builder" in line for line in said), said
    assert (tmp_path / "work" / "kit" / broken.name).is_file()
    assert builds(cache) == [] and not (cache / features.key).exists()


def test_the_ansible_path_builds_on_the_preferred_builder_of_the_feature_set_and_refuses_non_root(
    tmp_path: Path,
) -> None:
    trixie = FeatureSet("cpu", "x86_64", "3.13", "0.3.36", libc="glibc2.41")
    keys = {"h1": "bookworm-key", "h2": trixie.key, "h3": trixie.key}
    assert _builder(trixie, keys, []) == "h2"
    assert _builder(trixie, keys, ["h1", "h3"]) == "h3"  # h1 is preferred but of another feature set
    assert _builder(trixie, {"h1": "bookworm-key"}, []) is None
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "cluster: c\nhosts:\n  - {name: h1, address: 10.0.0.1, ssh: {user: deploy}}\n"
        "  - {name: h2, address: 10.0.0.2, ssh: {user: deploy}}\n"
    )
    features = [{"backend": "cpu", "arch": "x86_64", "python": "3.11", "version": "0.3.36"}, asdict(trixie)]
    result = prepare_engines(features, str(tmp_path / "cache"), build=True, hosts=["h1", "h2"], spec_file=str(spec))
    problem = result["engines"][trixie.key]["problem"]
    assert "its builder h2 is reached as deploy" in problem and result["engines"][trixie.key]["wheel"] is None


def test_starting_a_build_returns_at_once_and_a_later_run_attaches_to_it(tmp_path: Path) -> None:
    """The shell that starts the build must end while the build runs (an SSH client waits for it otherwise)."""
    features = FeatureSet("cpu", "x86_64", "3.11", "0.3.36", libc="glibc2.36")
    place = BuildPlace(str(tmp_path / "work"), features)
    pip = Path(place.venv) / "bin" / "pip"
    pip.parent.mkdir(parents=True)
    pip.write_text("#!/bin/sh\nsleep 600\n")  # a build that lasts longer than the test
    pip.chmod(0o755)
    Path(place.folder).mkdir(parents=True)
    remote = LocalRemote()
    status, _ = remote.run(_start_command(place, "1"), 60)  # a start held by the build would time out
    pid = int((Path(place.folder) / "build.pid").read_text())
    try:
        assert status == 0
        assert _running(remote, place), "a second deploy sees the build running and waits for it"
    finally:
        build = psutil.Process(pid)
        for process in [*build.children(recursive=True), build]:
            process.kill()
        psutil.wait_procs([build], timeout=10)
    assert not _running(remote, place)


def test_a_hostile_prefix_reaches_the_build_shell_as_a_plain_path(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    features = FeatureSet("cuda", "x86_64", "3.11", "0.3.36", libc="glibc2.36", cuda="13", cuda_architectures="89")
    place = BuildPlace(str(tmp_path / f'w"$(touch {marker})"'), features)
    Path(place.folder).mkdir(parents=True)
    status, _ = LocalRemote().run(_start_command(place, "1", f"{place.venv}/nvidia/cu13"), 60)
    rc = Path(place.folder) / "build.rc"
    deadline = time.monotonic() + 60
    while not rc.exists() and time.monotonic() < deadline:  # the build fails at once: no pip in that venv
        time.sleep(0.1)
    assert status == 0 and rc.read_text().strip() != "0"
    assert not marker.exists()
