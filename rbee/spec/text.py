"""What text a spec string may hold: plain, one line, no template or shell syntax, and a pattern per kind.

Spec strings reach SSH command lines, Ansible (which templates strings), systemd units and shells
on the hosts; so every string field has a strict pattern (``HostPath``, ``LocalPath``, ``Address``,
``UnixUser``, ``EnvName``, names and model ids in ``rbee.spec.types``) and no string anywhere in
the file may hold a control character or template syntax (``plain_text_problem``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, WithJsonSchema

from rbee.spec.issues import SpecIssue
from rbee.spec.positions import Path_
from rbee.spec.types import spec_error

TEMPLATE_MARKERS = ("{{", "{%", "{#", "${", "$(", "`")
"""Jinja2/Ansible template openers and shell substitutions: never data in a spec."""

_PATH_CHARS = re.compile(r"[A-Za-z0-9/._+@-]+", re.ASCII)
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?", re.ASCII)
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}", re.ASCII)
MAX_PATH = 1024


def bad_character(value: str) -> str | None:
    """The first control, format or line/paragraph separator character of ``value`` (None if none).

    Covers C0/C1 controls (newline, tab, NUL, DEL, ...), U+2028/U+2029 and the bidi overrides.
    """
    return next((c for c in value if not c.isprintable() and c != " "), None)


def template_marker(value: str) -> str | None:
    """The first template or shell-substitution opener in ``value`` (None if none)."""
    found = [(value.find(m), m) for m in TEMPLATE_MARKERS if m in value]
    return min(found)[1] if found else None


def plain_text_problem(value: str) -> tuple[str, str] | None:
    """(message, hint) when ``value`` is not plain one-line text; None when it is."""
    if (char := bad_character(value)) is not None:
        return f"holds the control character {char!r}", "a spec value is one line of plain text: remove it"
    if (marker := template_marker(value)) is not None:
        return (
            f"holds template or shell syntax ({marker!r})",
            "spec values are data, never templates or commands: write the value itself",
        )
    return None


def _plain(value: str) -> None:
    if (problem := plain_text_problem(value)) is not None:
        raise spec_error(*problem)


def _check_path(value: str, *, host: bool) -> str:
    _plain(value)
    allowed = "letters, digits and / . _ - + @"
    example = "/opt/rbee" if host else "~/.ssh/id_ed25519 or /etc/rbee/known_hosts"
    if host and not value.startswith("/"):
        raise spec_error("must be an absolute path", f"write e.g. {example}")
    if len(value) > MAX_PATH:
        raise spec_error(f"a path of at most {MAX_PATH} characters", f"write e.g. {example}")
    rest = value[1:] if value == "~" or value.startswith("~/") else value
    if rest and not _PATH_CHARS.fullmatch(rest):
        raise spec_error(f"a path of {allowed} only", f"write e.g. {example}")
    if value.startswith("-"):
        raise spec_error("a path may not start with '-' (it would read as an option)", f"write e.g. {example}")
    if ".." in value.split("/"):
        raise spec_error("a path may not contain '..'", f"write the path without '..', e.g. {example}")
    return value


def _check_host_path(value: str) -> str:
    return _check_path(value, host=True)


def _check_local_path(value: str) -> str:
    return _check_path(value, host=False)


HostPath = Annotated[
    str,
    AfterValidator(_check_host_path),
    WithJsonSchema({"type": "string", "pattern": r"^/[A-Za-z0-9/._+@-]*$", "maxLength": MAX_PATH}),
]
"""An absolute path on a host: letters, digits and ``/._-+@``, no ``..``."""

LocalPath = Annotated[
    str,
    AfterValidator(_check_local_path),
    WithJsonSchema({"type": "string", "pattern": r"^(~|~/)?[A-Za-z0-9/._+@][A-Za-z0-9/._+@-]*$"}),
]
"""A path on the control machine: absolute, ``~/...`` or relative; the same characters, no ``..``."""


_ADDRESS_HINT = "write a host name (gpu-box.lan) or an IP address (192.168.1.10, fd00::1)"


def _address_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return "an IPv6 address with a zone (%...) is not supported" if "%" in value else None
    if re.fullmatch(r"[0-9.]+", value):
        return "not a valid IPv4 address"
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        return "not a host name or IP address"
    return None


def _check_address(value: str) -> str:
    _plain(value)
    if (problem := _address_problem(value)) is not None:
        raise spec_error(problem, _ADDRESS_HINT)
    return value


Address = Annotated[
    str,
    AfterValidator(_check_address),
    WithJsonSchema({"type": "string", "description": "A host name (RFC 1123) or an IPv4/IPv6 address."}),
]


def _check_user(value: str) -> str:
    _plain(value)
    if not _USER.fullmatch(value):
        raise spec_error(
            "not a valid user name",
            "use lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 (e.g. deploy)",
        )
    return value


UnixUser = Annotated[
    str, AfterValidator(_check_user), WithJsonSchema({"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$"})
]
"""A POSIX user name."""


def _check_env_name(value: str) -> str:
    _plain(value)
    if not _ENV_NAME.fullmatch(value):
        raise spec_error(
            "not a valid environment variable name",
            "use uppercase letters, digits and '_', not starting with a digit (e.g. RBEE_API_KEYS)",
        )
    return value


EnvName = Annotated[
    str, AfterValidator(_check_env_name), WithJsonSchema({"type": "string", "pattern": r"^[A-Z_][A-Z0-9_]*$"})
]
"""An environment variable name."""


_SOURCE_HINT = "use hf:OWNER/REPO/FILE.gguf, file:///abs/path.gguf or https://host/path.gguf"
_HF_PART = r"[A-Za-z0-9._-]+"
_HF = re.compile(rf"hf:{_HF_PART}/{_HF_PART}/{_HF_PART}(?:/{_HF_PART})*\.gguf", re.ASCII)
_URL_REST = re.compile(r"(?:[A-Za-z0-9._~:/?#\[\]@!&()*+,;=-]|%[0-9A-Fa-f]{2})*", re.ASCII)
MAX_SOURCE = 2048


def _check_https(value: str) -> None:
    rest = value[len("https://") :]
    if not rest or "/" not in rest:
        raise spec_error("an https source needs a host and a path", "write https://host/path/model.gguf")
    if not _URL_REST.fullmatch(rest):
        raise spec_error(
            "an https source of URL characters only",
            "percent-encode anything else (a space is %20); quotes, '$', '{}', '<>' and '\\' never belong in it",
        )
    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise spec_error(
            "an https source may not hold credentials",
            "keep secrets out of the spec: fetch the file yourself and use file:///abs/path.gguf",
        )
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise spec_error("an https source has a bad port", "write https://host:8443/path/model.gguf") from None
    if (problem := _address_problem(parts.hostname or "")) is not None:
        raise spec_error(f"the host of an https source is {problem}", "write https://host/path/model.gguf")


def _check_source(value: str) -> str:
    _plain(value)
    if len(value) > MAX_SOURCE:
        raise spec_error(f"a source of at most {MAX_SOURCE} characters", _SOURCE_HINT)
    if value.startswith("hf:"):
        if not _HF.fullmatch(value):
            raise spec_error(
                "a Hugging Face source names owner, repository and file",
                "write hf:OWNER/REPO/FILE.gguf, e.g. hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/"
                "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            )
        if {".", ".."} & set(value[len("hf:") :].split("/")):
            raise spec_error("a Hugging Face source may not contain '.' or '..' parts", _SOURCE_HINT)
    elif value.startswith("file://"):
        if not value.startswith("file:///"):
            raise spec_error("a file source needs an absolute path", "write file:///abs/path/model.gguf")
        _check_path(value[len("file://") :], host=True)
    elif value.startswith("https://"):
        _check_https(value)
    elif ":" not in value:
        raise spec_error("source has no scheme", _SOURCE_HINT)
    else:
        raise spec_error(f"unsupported source scheme {value.split(':', 1)[0]!r}", _SOURCE_HINT)
    return value


ModelSource = Annotated[
    str,
    AfterValidator(_check_source),
    WithJsonSchema({"type": "string", "pattern": "^(hf:|file:///|https://)", "maxLength": MAX_SOURCE}),
]
"""Where a model comes from: ``hf:OWNER/REPO/FILE.gguf``, ``file:///abs/path.gguf`` or ``https://host/path``."""


def text_issues(data: Any, path: Path_ = ()) -> Iterator[SpecIssue]:
    """Every string of a parsed document, mapping keys included, that is not plain one-line text."""
    if isinstance(data, str):
        if (problem := plain_text_problem(data)) is not None:
            yield SpecIssue(path, problem[0], data, problem[1])
    elif isinstance(data, dict):
        for key, value in data.items():
            part = key if isinstance(key, str | int) else str(key)
            if isinstance(key, str) and (problem := plain_text_problem(key)) is not None:
                yield SpecIssue((*path, part), f"the key {problem[0]}", key, problem[1], at_key=True)
            yield from text_issues(value, (*path, part))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from text_issues(item, (*path, index))
