"""Steps of the worker resource preflight and of resource management: the hive's RAM/VRAM checks on recorded
GPU facts (``tests/fixtures/nvidia-smi``) and real hives refusing workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from pytest_bdd import given, parsers, then, when

from features.steps.data_fixtures import Hives, gpus_from_nvidia_smi, parse_size
from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.common.errors import ApiError
from rbee_runtime.hive.resources import (
    RAM_FACTOR,
    check_ram,
    check_vram,
    choose_gpu,
    required_ram,
    required_vram,
)


def _api_error(data_ctx: dict[str, Any]) -> ApiError:
    error = data_ctx.get("error")
    assert isinstance(error, ApiError), f"expected a refusal, got {data_ctx.get('result')!r}"
    return error


def _run(data_ctx: dict[str, Any], check: Callable[[], Any]) -> None:
    try:
        data_ctx["result"] = check()
    except ApiError as error:
        data_ctx["error"] = error


# --------------------------------------------------------------------------- a real hive


def _start_hive(data_ctx: dict[str, Any], hive_procs: Hives, model_files: Callable[..., Path], model_id: str,
                size: int, *, sparse: bool = False, **settings: Any) -> None:  # fmt: skip
    path = model_files(f"{model_id}.gguf", size, sparse=sparse)
    config = hive_procs.config(
        "preflight-hive",
        models=[{"model_id": model_id, "reference": f"file://{path}", "local_path": str(path)}],
        **settings,
    )
    hive = hive_procs.start(config)
    listed = {m["model_id"]: m for m in hive.http.get("/v1/models").json()["models"]}
    assert listed[model_id]["size_bytes"] == size
    data_ctx.update(hive=hive, model_size=size, reserve=int(config["ram_reserve_bytes"]))


@given(parsers.parse('a running hive that keeps {reserve} of RAM in reserve, with the model "{model_id}" of {size}'))
def _hive_reserve(data_ctx: dict[str, Any], hive_procs: Hives, model_files: Callable[..., Path], reserve: str,
                  model_id: str, size: str) -> None:  # fmt: skip
    _start_hive(data_ctx, hive_procs, model_files, model_id, parse_size(size), ram_reserve_bytes=parse_size(reserve))


@given(parsers.parse('a running hive on this machine, which has no NVIDIA GPU, with the model "{model_id}" of {size}'))
def _hive_no_gpu(data_ctx: dict[str, Any], hive_procs: Hives, model_files: Callable[..., Path], model_id: str,
                 size: str) -> None:  # fmt: skip
    _start_hive(data_ctx, hive_procs, model_files, model_id, parse_size(size))
    caps = data_ctx["hive"].http.get("/v1/capabilities").json()
    assert caps["resources"]["gpus"] == [] and caps["backends"] == ["cpu"], f"this machine has GPUs: {caps}"


@given(parsers.parse('a running hive with the model "{model_id}" as large as the RAM available on this machine'))
def _hive_huge(data_ctx: dict[str, Any], hive_procs: Hives, model_files: Callable[..., Path], model_id: str) -> None:
    size = int(psutil.virtual_memory().available)
    _start_hive(data_ctx, hive_procs, model_files, model_id, size, sparse=True)


@when(parsers.parse('a worker for "{model_id}" is requested from the hive'))
def _request_worker(data_ctx: dict[str, Any], model_id: str) -> None:
    data_ctx["available_now"] = int(psutil.virtual_memory().available)
    data_ctx["response"] = data_ctx["hive"].http.post("/v1/workers", json={"model_id": model_id})


@when(parsers.parse('a worker for "{model_id}" is requested from the hive on backend "{backend}"'))
def _request_backend(data_ctx: dict[str, Any], model_id: str, backend: str) -> None:
    data_ctx["response"] = data_ctx["hive"].http.post("/v1/workers", json={"model_id": model_id, "backend": backend})


@then(parsers.parse('the hive refuses with {status:d} "{code}"'))
def _hive_refuses(data_ctx: dict[str, Any], status: int, code: str) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == status, resp.text
    data_ctx["body"] = resp.json()["error"]
    assert data_ctx["body"]["code"] == code


@then(
    parsers.parse("the error shows the RAM required as {size} × 1.2 + {reserve} and the RAM available on this machine")
)
def _ram_details(data_ctx: dict[str, Any], size: str, reserve: str) -> None:
    details = data_ctx["body"]["details"]
    assert details["required_bytes"] == int(parse_size(size) * RAM_FACTOR) + parse_size(reserve)
    assert details["model_size_bytes"] == parse_size(size) and details["reserve_bytes"] == parse_size(reserve)
    assert 0 < details["available_bytes"] <= psutil.virtual_memory().total


@then("the message suggests a smaller quantization of the model")
def _suggests_quant(data_ctx: dict[str, Any]) -> None:
    message = data_ctx["body"]["message"] if "body" in data_ctx else _api_error(data_ctx).message
    assert "smaller quantization" in message and "Q4_K_M" in message


@then("the hive started no worker")
def _no_worker(data_ctx: dict[str, Any]) -> None:
    hive = data_ctx["hive"]
    assert hive.workers() == []
    assert not [p for p in psutil.Process(hive.proc.pid).children(recursive=True) if "rbee_runtime.worker" in
                " ".join(p.cmdline())]  # fmt: skip


@then(parsers.parse('the hive refuses with 400 "{code}" listing "{backend}" as the backend available'))
def _backend_refused(data_ctx: dict[str, Any], code: str, backend: str) -> None:
    resp = data_ctx["response"]
    assert resp.status_code == 400, resp.text
    data_ctx["body"] = resp.json()["error"]
    assert data_ctx["body"]["code"] == code
    assert data_ctx["body"]["details"]["available"] == [backend]


@then(parsers.parse('the message says "{text}"'))
def _message_says(data_ctx: dict[str, Any], text: str) -> None:
    assert text in data_ctx["body"]["message"], data_ctx["body"]["message"]


@then(parsers.parse("the RAM it reports available is within {percent:d}% of what this machine has available now"))
def _ram_now(data_ctx: dict[str, Any], percent: int) -> None:
    details = data_ctx["body"]["details"]
    now = data_ctx["available_now"]
    assert abs(details["available_bytes"] - now) <= now * percent / 100, (details["available_bytes"], now)
    assert details["required_bytes"] == required_ram(data_ctx["model_size"], data_ctx["reserve"])


# --------------------------------------------------------------------------- RAM on given facts


@given(parsers.parse("a machine with {available} of RAM available and a reserve of {reserve}"))
def _ram_facts(data_ctx: dict[str, Any], available: str, reserve: str) -> None:
    data_ctx.update(available=parse_size(available), reserve=parse_size(reserve), pending=0)


@given(parsers.parse("a worker is still loading a model of {size}"))
def _loading_ram(data_ctx: dict[str, Any], size: str) -> None:
    data_ctx["pending"] += required_ram(parse_size(size), 0)


def _ram_check(data_ctx: dict[str, Any], size: str) -> None:
    data_ctx.pop("error", None)
    _run(
        data_ctx,
        lambda: check_ram(
            "model",
            parse_size(size),
            data_ctx["reserve"],
            available_bytes=data_ctx["available"],
            pending_bytes=data_ctx["pending"],
        ),
    )


@then(parsers.parse("a worker for a model of {size} passes the RAM check"))
def _ram_passes(data_ctx: dict[str, Any], size: str) -> None:
    _ram_check(data_ctx, size)
    assert "error" not in data_ctx, data_ctx.get("error")


@then(parsers.parse('a worker for a model of {size} is refused with 507 "{code}" requiring {needed} + {reserve}'))
def _ram_refused(data_ctx: dict[str, Any], size: str, code: str, needed: str, reserve: str) -> None:
    _ram_check(data_ctx, size)
    error = _api_error(data_ctx)
    assert (error.status, error.code) == (507, code)
    assert error.details["required_bytes"] == parse_size(needed) + parse_size(reserve)
    assert error.details["available_bytes"] == data_ctx["available"]


@then(parsers.parse('a worker for a model of {size} is refused with 507 "{code}" and {available} reported available'))
def _ram_refused_pending(data_ctx: dict[str, Any], size: str, code: str, available: str) -> None:
    _ram_check(data_ctx, size)
    error = _api_error(data_ctx)
    assert (error.status, error.code) == (507, code)
    assert abs(error.details["available_bytes"] - parse_size(available)) <= 1
    assert error.details["available_bytes"] == data_ctx["available"] - data_ctx["pending"]


# --------------------------------------------------------------------------- GPUs from recorded facts


@given(parsers.parse('the GPUs of a host as nvidia-smi reported them in "{recording}"'))
def _gpus(data_ctx: dict[str, Any], nvidia_smi: Callable[[str], str], recording: str) -> None:
    gpus = gpus_from_nvidia_smi(nvidia_smi(recording))
    assert gpus, f"{recording} lists no GPU"
    data_ctx.update(gpus=gpus, pending_vram={}, allowed=None)


@given(parsers.parse("the hive may only use device {device:d}"))
def _allowed(data_ctx: dict[str, Any], device: int) -> None:
    data_ctx["allowed"] = [device]


@given(parsers.parse("a worker is still loading a model of {size} on device {device:d}"))
def _loading_vram(data_ctx: dict[str, Any], size: str, device: int) -> None:
    data_ctx["pending_vram"][device] = data_ctx["pending_vram"].get(device, 0) + required_vram(parse_size(size))


@when(parsers.parse("a worker for a model of {size} is checked against CUDA device {device:d}"))
def _vram_check(data_ctx: dict[str, Any], size: str, device: int) -> None:
    data_ctx["model_size"] = parse_size(size)
    _run(data_ctx, lambda: check_vram(parse_size(size), data_ctx["gpus"], device, model_id="model"))


@when(parsers.parse("a GPU is chosen for a worker of a model of {size}"))
def _choose(data_ctx: dict[str, Any], size: str) -> None:
    data_ctx["model_size"] = parse_size(size)
    _run(
        data_ctx,
        lambda: choose_gpu(
            parse_size(size), data_ctx["gpus"], allowed=data_ctx["allowed"], pending=data_ctx["pending_vram"]
        ),
    )


@then(parsers.parse('it is refused with 507 "{code}" on device {device:d}'))
def _vram_refused(data_ctx: dict[str, Any], code: str, device: int) -> None:
    error = _api_error(data_ctx)
    assert (error.status, error.code) == (507, code)
    assert error.details["device"] == device
    assert f"CUDA device {device}" in error.message


@then(parsers.parse("the error shows {required} of VRAM required and {available} available"))
def _vram_numbers(data_ctx: dict[str, Any], required: str, available: str) -> None:
    error = _api_error(data_ctx)
    assert error.details["required_bytes"] == parse_size(required)
    assert error.details["available_bytes"] == parse_size(available)


@then(parsers.parse("the message suggests device {device:d} and a smaller quantization of the model"))
def _vram_hint(data_ctx: dict[str, Any], device: int) -> None:
    message = _api_error(data_ctx).message
    assert f"Use device {device} (" in message
    assert "smaller quantization" in message and "backend cpu" in message


@then(parsers.parse('the worker may start on device {device:d} "{name}"'))
def _vram_ok(data_ctx: dict[str, Any], device: int, name: str) -> None:
    assert "error" not in data_ctx, data_ctx.get("error")
    gpu: GpuInfo = data_ctx["result"]
    assert (gpu.index, gpu.name) == (device, name)
    assert gpu.memory_free_bytes >= required_vram(data_ctx["model_size"])


@then(parsers.parse('it is refused with 400 "{code}" suggesting device {first:d} or device {second:d}'))
def _no_device(data_ctx: dict[str, Any], code: str, first: int, second: int) -> None:
    error = _api_error(data_ctx)
    assert (error.status, error.code) == (400, code)
    assert f"Try device {first} or device {second}." in error.message
    assert error.details["devices"] == [first, second]


@then(parsers.parse("CUDA device {device:d} is chosen, with {free} free"))
def _chosen(data_ctx: dict[str, Any], device: int, free: str) -> None:
    assert "error" not in data_ctx, data_ctx.get("error")
    gpu: GpuInfo = data_ctx["result"]
    assert gpu.index == device and gpu.memory_free_bytes == parse_size(free)


@then(parsers.parse('no GPU is chosen: 507 "{code}" listing the free VRAM of devices {first:d} and {second:d}'))
def _none_chosen(data_ctx: dict[str, Any], code: str, first: int, second: int) -> None:
    error = _api_error(data_ctx)
    assert (error.status, error.code) == (507, code)
    free = error.details["free_bytes_by_device"]
    assert sorted(free) == [str(first), str(second)]
    expected = {str(g.index): g.memory_free_bytes - data_ctx["pending_vram"].get(g.index, 0) for g in data_ctx["gpus"]}
    assert free == expected
    assert all(f < required_vram(data_ctx["model_size"]) for f in free.values())
    assert "No CUDA device has enough free VRAM" in error.message
