"""Steps of worker provisioning: feature sets, CMake flags, the wheel cache, and the installed engine."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from rbee.engine import wheelcache
from rbee.engine.detect import choose_backend, parse_nvidia_smi
from rbee.engine.features import EngineBackend, FeatureSet, local_feature_set
from rbee.engine.verify import EngineCheck, verify_engine
from rbee.engine.wheelcache import DEFAULT_CACHE, EngineBuildError, build_command, build_env, cached_wheel

BACKENDS: dict[str, EngineBackend] = {"cpu": "cpu", "cuda": "cuda", "metal": "metal"}


def _installed_engine_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


# --------------------------------------------------------------------------- feature sets


@given(
    parsers.parse(
        'a "{backend}" host on "{arch}" with Python {python}, llama-cpp-python {version} and CUDA architectures '
        '"{cuda}"'
    ),
    target_fixture="features_",
)
def _feature_set(backend: str, arch: str, python: str, version: str, cuda: str) -> FeatureSet:
    darwin = backend == "metal"
    return FeatureSet(
        backend=BACKENDS[backend],
        arch=arch,
        python=python,
        version=version,
        os="darwin" if darwin else "linux",
        libc="macos14.0" if darwin else "glibc2.36",
        cuda=None if cuda == "-" else "13",
        cuda_architectures=None if cuda == "-" else cuda,
    )


@then(parsers.parse('its engine is built with CMAKE_ARGS "{cmake_args}"'))
def _cmake_args(features_: FeatureSet, cmake_args: str) -> None:
    assert " ".join(features_.cmake_args) == cmake_args
    assert build_env(features_, jobs=2, base={})["CMAKE_ARGS"] == cmake_args


@then(parsers.parse('its build key reads "{prefix}" followed by a digest of those flags'))
def _key(features_: FeatureSet, prefix: str) -> None:
    assert re.fullmatch(re.escape(prefix) + r"[0-9a-f]{8}", features_.key), features_.key
    assert features_.key == replace(features_).key, "the key is stable"


@then(parsers.parse("its engine must {offload} GPU offload"))
def _offload(features_: FeatureSet, offload: str) -> None:
    assert features_.gpu_offload is {"support": True, "not support": False}[offload]


@then(parsers.parse('its build key differs from that of the same host with backend "{backend}"'))
def _differs_backend(features_: FeatureSet, backend: str) -> None:
    assert replace(features_, backend=BACKENDS[backend]).key != features_.key


@then(parsers.parse('its build key differs from that of the same host with Python "{python}"'))
def _differs_python(features_: FeatureSet, python: str) -> None:
    assert replace(features_, python=python).key != features_.key


@then(parsers.parse('its build key differs from that of the same host with llama-cpp-python "{version}"'))
def _differs_version(features_: FeatureSet, version: str) -> None:
    assert replace(features_, version=version).key != features_.key


@then(parsers.parse('its build key differs from that of the same host with libc "{libc}"'))
def _differs_libc(features_: FeatureSet, libc: str) -> None:
    assert replace(features_, libc=libc).key != features_.key


@then(parsers.parse('its build key differs from that of the same host on "{arch}"'))
def _differs_arch(features_: FeatureSet, arch: str) -> None:
    other = replace(features_, arch=arch)
    assert other.key != features_.key and other.cmake_args == features_.cmake_args


# --------------------------------------------------------------------------- backend from nvidia-smi


@given(parsers.parse('a {system} {machine} host whose nvidia-smi printed "{recording}"'))
def _recorded_host(data_ctx: dict[str, Any], nvidia_smi: Callable[[str], str], system: str, machine: str,
                   recording: str) -> None:  # fmt: skip
    output = "" if recording == "nothing" else nvidia_smi(recording)
    data_ctx.update(system=system, machine=machine, gpus=parse_nvidia_smi(output))


@when(parsers.parse('the backend "{wanted}" is resolved for it'))
def _resolve(data_ctx: dict[str, Any], wanted: str) -> None:
    assert wanted == "auto"
    data_ctx["backend"] = choose_backend(data_ctx["system"], data_ctx["machine"], data_ctx["gpus"])


@then(parsers.parse('it gets the "{backend}" engine build with {count:d} GPU(s)'))
def _gets_backend(data_ctx: dict[str, Any], backend: str, count: int) -> None:
    assert data_ctx["backend"] == backend
    assert len(data_ctx["gpus"]) == count
    assert all(g.memory_total_mib >= g.memory_free_mib > 0 for g in data_ctx["gpus"])
    built = FeatureSet(backend=data_ctx["backend"], arch=data_ctx["machine"], python="3.11", version="0.3.36")
    assert built.gpu_offload is (backend != "cpu")


# --------------------------------------------------------------------------- this machine's engine


@given(
    parsers.parse('the feature set of this machine for the "{backend}" backend and the installed engine version'),
    target_fixture="features_",
)
def _local_installed(backend: str) -> FeatureSet:
    features = local_feature_set(BACKENDS[backend], _installed_engine_version())
    assert features.arch == platform.machine()
    assert features.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    return features


@given(
    parsers.parse('the feature set of this machine for the "{backend}" backend and llama-cpp-python "{version}"'),
    target_fixture="features_",
)
def _local_version(backend: str, version: str) -> FeatureSet:
    assert version != _installed_engine_version()
    return local_feature_set(BACKENDS[backend], version)


@then("the wheel cache holds a llama-cpp-python wheel for that feature set")
def _cache_hit(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    wheel = cached_wheel(features_)
    assert wheel is not None, (
        f"no wheel for {features_.key} under {DEFAULT_CACHE}: build it once with `rbee engine build --backend cpu`"
    )
    assert wheel.parent == DEFAULT_CACHE.expanduser() / features_.key
    assert wheel.name.startswith(f"llama_cpp_python-{features_.version}-")
    data_ctx["wheel"] = wheel


@then("asking for the engine returns that wheel at once, without running a build")
def _no_build(data_ctx: dict[str, Any], features_: FeatureSet, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        started.append(args)
        raise AssertionError(f"a build was started: {args}")

    with monkeypatch.context() as patch:
        patch.setattr(wheelcache.subprocess, "run", forbidden)
        begin = time.perf_counter()
        wheel = wheelcache.build_wheel(features_)
        took = time.perf_counter() - begin
    assert wheel == data_ctx["wheel"] and started == []
    assert took < 1.0, f"a cache hit took {took:.2f} s"


@then("the wheel holds the llama_cpp package with its compiled library")
def _wheel_content(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    with zipfile.ZipFile(data_ctx["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"llama_cpp_python-{features_.version}.dist-info/METADATA").decode()
    assert "llama_cpp/__init__.py" in names
    assert any(re.fullmatch(r"llama_cpp/lib/libllama\.(so|dylib)(\.\d+)*", n) for n in names), sorted(names)[:20]
    assert f"\nVersion: {features_.version}\n" in metadata


@then("the wheel cache has no wheel for that feature set")
def _cache_miss(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    assert cached_wheel(features_) is None
    assert not (DEFAULT_CACHE.expanduser() / features_.key).exists()
    cache = DEFAULT_CACHE.expanduser()
    data_ctx["cache_before"] = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


@when("the engine is asked for, with the build stopped as soon as it starts")
def _stopped_build(data_ctx: dict[str, Any], features_: FeatureSet, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def stop_build(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs["stdout"].write("rbee test: the build was stopped before pip ran\n")
        calls.append({"command": command, **kwargs})
        return subprocess.CompletedProcess(command, 1)

    with monkeypatch.context() as patch:
        patch.setattr(wheelcache.subprocess, "run", stop_build)
        with pytest.raises(EngineBuildError) as caught:
            wheelcache.build_wheel(features_)
    data_ctx.update(build_calls=calls, build_error=caught.value)


@then(parsers.parse('a build from source was started: "{tool}" of "{requirement}" without dependencies'))
def _build_started(data_ctx: dict[str, Any], features_: FeatureSet, tool: str, requirement: str) -> None:
    (call,) = data_ctx["build_calls"]
    command: list[str] = call["command"]
    assert command[:3] == [sys.executable, "-m", "pip"] and " ".join(command[3:5]) == f"{tool.split()[1]} --no-deps"
    assert command[-1] == requirement and "--no-binary" in command and "--no-cache-dir" in command
    out_dir = Path(command[command.index("-w") + 1])
    assert command == build_command(features_, out_dir), "build_wheel runs exactly build_command()"
    assert out_dir.parent.parent == DEFAULT_CACHE.expanduser(), "it builds beside the cache, then moves in atomically"


@then(parsers.parse('the build got CMAKE_ARGS "{cmake_args}" and every CPU core of this machine'))
def _build_env(data_ctx: dict[str, Any], features_: FeatureSet, cmake_args: str) -> None:
    (call,) = data_ctx["build_calls"]
    env: dict[str, str] = call["env"]
    assert env["CMAKE_ARGS"] == cmake_args
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"] == str(os.cpu_count())
    assert env["PATH"] == os.environ["PATH"], "the build sees this machine's environment"


@then("the stopped build is reported with the end of its log, and the wheel cache is unchanged")
def _build_reported(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    message = str(data_ctx["build_error"])
    assert f"({features_.key}) failed to build" in message
    assert "the build was stopped before pip ran" in message
    cache = DEFAULT_CACHE.expanduser()
    assert sorted(p.name for p in cache.iterdir()) == data_ctx["cache_before"]
    assert cached_wheel(features_) is None


@when("the installed engine is verified against that feature set")
def _verify(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    data_ctx["check"] = verify_engine(sys.executable, features_)


def _check(data_ctx: dict[str, Any]) -> EngineCheck:
    check: EngineCheck = data_ctx["check"]
    return check


@then("llama_cpp imports in this Python with the version of the feature set")
def _imports(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    check = _check(data_ctx)
    assert check.version == features_.version, check.problems


@then("llama_supports_gpu_offload() is false, as a CPU build must report")
def _no_offload(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    assert _check(data_ctx).gpu_offload is False
    assert features_.gpu_offload is False


@then("the engine passes the verification")
def _passes(data_ctx: dict[str, Any]) -> None:
    assert _check(data_ctx).ok and _check(data_ctx).problems == []


@then("the verification fails because llama_supports_gpu_offload() is false for a cuda build")
def _fails(data_ctx: dict[str, Any], features_: FeatureSet) -> None:
    check = _check(data_ctx)
    assert not check.ok and check.version == features_.version
    assert check.problems == ["llama_supports_gpu_offload() is False, a cuda build must report True"]
