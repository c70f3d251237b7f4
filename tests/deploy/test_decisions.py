"""The deploy's decisions, on recorded real command outputs: GPU detection, backend, CMake flags, preflight."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee.deploy.probe import Requirements, judge, parse_probe
from rbee.engine.detect import choose_backend, parse_nvidia_smi
from rbee.engine.features import FeatureSet

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"
GiB = 1024**3


def probe_output(gpus: str = "", python: str = "3.11.2", systemd: str = "yes", os: str = "Linux") -> str:
    lines = [
        f"os={os}",
        "arch=x86_64",
        "kernel=6.1.0",
        "distro=debian 12",
        f"python={python}",
        "python_venv=yes",
        "ram_total_kb=16000000",
        "ram_available_kb=12000000",
        "disk_free_kb=50000000",
        f"systemd={systemd}",
    ]
    lines += [f"gpu={line}" for line in gpus.splitlines() if line.strip()]
    return "\n".join([*lines, "probe=done"])


def needs(backend: str = "auto", gpus: list[int] | str = "all", ram: int = GiB) -> Requirements:
    return Requirements(backend=backend, gpus=gpus, min_ram_bytes=ram, min_disk_bytes=GiB)


def test_nvidia_smi_two_gpus() -> None:
    gpus = parse_nvidia_smi((FIXTURES / "nvidia-smi-2x4090.txt").read_text())
    assert [(g.index, g.name, g.memory_total_mib, g.memory_free_mib, g.compute_cap) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 24564, 23012, "8.9"),
        (1, "NVIDIA GeForce RTX 4090", 24564, 1620, "8.9"),
    ]


def test_nvidia_smi_without_driver_means_no_gpu() -> None:
    assert parse_nvidia_smi((FIXTURES / "nvidia-smi-no-driver.txt").read_text()) == []


@pytest.mark.parametrize(
    ("system", "machine", "fixture", "expected"),
    [
        ("Linux", "x86_64", "nvidia-smi-2x4090.txt", "cuda"),
        ("Linux", "x86_64", "nvidia-smi-h100-mig.txt", "cuda"),
        ("Linux", "x86_64", "nvidia-smi-no-driver.txt", "cpu"),
        ("Darwin", "arm64", None, "metal"),
        ("Darwin", "x86_64", None, "cpu"),
        ("Linux", "aarch64", None, "cpu"),
    ],
)
def test_auto_backend(system: str, machine: str, fixture: str | None, expected: str) -> None:
    gpus = parse_nvidia_smi((FIXTURES / fixture).read_text()) if fixture else []
    assert choose_backend(system, machine, gpus) == expected


@pytest.mark.parametrize(
    ("backend", "arch", "flags"),
    [
        ("cpu", "x86_64", ("-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF")),
        ("cuda", "x86_64", ("-DGGML_CUDA=on", "-DGGML_NATIVE=OFF", "-DGGML_CUDA_NO_VMM=ON")),
        (
            "metal",
            "arm64",
            ("-DGGML_METAL=on", "-DCMAKE_OSX_ARCHITECTURES=arm64", "-DCMAKE_APPLE_SILICON_PROCESSOR=arm64"),
        ),
    ],
)
def test_cmake_args_per_backend(backend: str, arch: str, flags: tuple[str, ...]) -> None:
    features = FeatureSet(backend=backend, arch=arch, python="3.11", version="0.3.36")  # type: ignore[arg-type]
    assert features.cmake_args == flags
    assert features.gpu_offload == (backend != "cpu")


def test_feature_sets_share_a_key_only_when_equal() -> None:
    a = FeatureSet("cpu", "x86_64", "3.11", "0.3.36")
    assert a.key == FeatureSet("cpu", "x86_64", "3.11", "0.3.36").key
    assert a.key.startswith("0.3.36-cpu-linux_x86_64-py3.11-")
    others = [
        FeatureSet("cuda", "x86_64", "3.11", "0.3.36"),
        FeatureSet("cpu", "aarch64", "3.11", "0.3.36"),
        FeatureSet("cpu", "x86_64", "3.12", "0.3.36"),
        FeatureSet("cpu", "x86_64", "3.11", "0.3.35"),
        FeatureSet("cuda", "x86_64", "3.11", "0.3.36", cuda_architectures="89"),
        FeatureSet("cpu", "x86_64", "3.11", "0.3.36", libc="glibc2.41"),
        FeatureSet("cpu", "arm64", "3.11", "0.3.36", os="darwin", libc="macos14.0"),
        FeatureSet("cuda", "x86_64", "3.11", "0.3.36", cuda="13", cuda_architectures="89"),
        FeatureSet("cuda", "x86_64", "3.11", "0.3.36", cuda="13", cuda_architectures="80;89"),
        FeatureSet("cuda", "x86_64", "3.11", "0.3.36", cuda="12", cuda_architectures="89"),
    ]
    assert len({a.key, *(f.key for f in others)}) == 11


def test_probe_on_a_cuda_host_resolves_auto_to_cuda() -> None:
    facts = parse_probe(probe_output(gpus=(FIXTURES / "nvidia-smi-2x4090.txt").read_text()))
    assert facts.complete and facts.python == (3, 11, 2) and facts.ram_available_bytes == 12000000 * 1024
    assert facts.backend_for("auto") == "cuda" and len(facts.gpus) == 2
    assert judge(facts, needs(gpus=[0, 1])) == []


def test_preflight_names_every_problem() -> None:
    facts = parse_probe(probe_output(python="3.9.2", systemd="no"))
    problems = judge(facts, needs(backend="cuda", ram=64 * GiB))
    text = " | ".join(problems)
    assert "python3 is 3.9.2; rbee needs >= 3.11" in text
    assert "systemd is not running" in text
    assert "backend cuda, but nvidia-smi lists no GPU" in text
    assert "RAM 15.3 GiB < 64.0 GiB" in text


def test_preflight_missing_gpu_index() -> None:
    facts = parse_probe(probe_output(gpus=(FIXTURES / "nvidia-smi-h100-mig.txt").read_text()))
    assert judge(facts, needs(backend="cuda", gpus=[0, 3])) == ["GPU index(es) [3] not present; nvidia-smi lists [0]"]


def test_preflight_no_python_and_truncated_probe() -> None:
    facts = parse_probe("os=Linux\narch=x86_64\npython=none\n")
    problems = judge(facts, needs())
    assert any("did not finish" in p for p in problems)
    assert any("python3 is not installed" in p for p in problems)


def test_metal_needs_apple_silicon() -> None:
    facts = parse_probe(probe_output(os="Linux"))
    assert "backend metal needs macOS on Apple silicon, found Linux x86_64" in judge(facts, needs(backend="metal"))


def test_a_glibc_older_than_the_wheelhouse_supports_is_refused() -> None:
    old = parse_probe(probe_output().replace("probe=done", "glibc=2.17\nprobe=done"))
    assert any("glibc 2.17 is older than 2.28" in p for p in judge(old, needs()))
    new = parse_probe(probe_output().replace("probe=done", "glibc=2.36\nprobe=done"))
    assert not any("glibc" in p for p in judge(new, needs()))
