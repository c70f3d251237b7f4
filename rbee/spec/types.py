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

VERSION_PATTERN = r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$"

_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


def _check_sha256(value: str) -> str:
    lowered = value.strip().lower()
    if not _SHA256.fullmatch(lowered):
        raise spec_error("a sha256 is 64 hexadecimal characters", "copy it from `sha256sum FILE`, or remove the key")
    return lowered


Sha256 = Annotated[str, AfterValidator(_check_sha256)]


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

_DEVICE = re.compile(r"auto|cpu|metal|cuda(:[0-9]{1,3})?", re.ASCII)


def _check_device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise spec_error("unknown device", "use auto, cpu, metal, cuda or cuda:N (a GPU index)")
    return value


Device = Annotated[str, AfterValidator(_check_device)]
