"""Small validated value types of the cluster spec (durations, sizes, sources, names)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError


def spec_error(message: str, hint: str = "") -> PydanticCustomError:
    """A validation error whose message and hint are shown to the operator as they are."""
    return PydanticCustomError("spec", message, {"hint": hint})


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise spec_error("expected a duration", "write e.g. 500ms, 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise spec_error("expected a duration", "write e.g. 500ms, 30s, 5m or 1h")
    if seconds < 0:
        raise spec_error("a duration cannot be negative", "write e.g. 30s")
    return seconds


Duration = Annotated[float, BeforeValidator(_parse_duration)]
"""Seconds; written as a number of seconds or with a unit: ``500ms``, ``30s``, ``5m``, ``1h``."""

Port = Annotated[int, Field(ge=1, le=65535)]

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
"""A DNS-safe name: lowercase letters, digits and dashes, at most 63 characters."""

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ModelId = Annotated[str, Field(pattern=MODEL_ID_PATTERN)]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: str) -> str:
    lowered = value.strip().lower()
    if not _SHA256.match(lowered):
        raise spec_error("a sha256 is 64 hexadecimal characters", "copy it from `sha256sum FILE`, or remove the key")
    return lowered


Sha256 = Annotated[str, AfterValidator(_check_sha256)]

_HF = re.compile(r"^hf:[\w.-]+/[\w.-]+/[\w./-]+\.gguf$")


def _check_source(value: str) -> str:
    if value.startswith("hf:"):
        if not _HF.match(value):
            raise spec_error(
                "a Hugging Face source names owner, repository and file",
                "write hf:OWNER/REPO/FILE.gguf, e.g. hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/"
                "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            )
    elif value.startswith("file://"):
        if not value.startswith("file:///"):
            raise spec_error("a file source needs an absolute path", "write file:///abs/path/model.gguf")
    elif value.startswith("https://"):
        if len(value) <= len("https://") or "/" not in value[len("https://") :]:
            raise spec_error("an https source needs a host and a path", "write https://host/path/model.gguf")
    else:
        hint = "use hf:OWNER/REPO/FILE.gguf, file:///abs/path.gguf or https://host/path.gguf"
        if ":" not in value:
            raise spec_error("source has no scheme", hint)
        raise spec_error(
            f"unsupported source scheme '{value.split(':', 1)[0]}'",
            "use hf:OWNER/REPO/FILE.gguf, file:///abs/path.gguf or https://host/path.gguf",
        )
    return value


ModelSource = Annotated[str, AfterValidator(_check_source)]


def _parse_gpus(value: Any) -> Any:
    if value == "all":
        return value
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        if any(i < 0 for i in value):
            raise spec_error("GPU indices start at 0", "write e.g. gpus: [0, 1] or gpus: all")
        if len(set(value)) != len(value):
            raise spec_error("a GPU index is listed twice", "list each GPU index once")
        return value
    raise spec_error("expected a list of GPU indices or 'all'", "write e.g. gpus: [0, 1] or gpus: all")


Gpus = Annotated[list[int] | str, BeforeValidator(_parse_gpus)]

_DEVICE = re.compile(r"^(auto|cpu|metal|cuda(:\d+)?)$")


def _check_device(value: str) -> str:
    if not _DEVICE.match(value):
        raise spec_error("unknown device", "use auto, cpu, metal, cuda or cuda:N (a GPU index)")
    return value


Device = Annotated[str, AfterValidator(_check_device)]
