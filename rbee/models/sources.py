"""Model sources of the spec (``hf:``, ``https://``, ``file://``): where to fetch from, what to send, what to hint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from rbee.models.errors import ModelFetchError

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ResolvedSource:
    """Where a spec ``source`` is fetched from."""

    url: str
    """The URL fetched (``file://`` sources keep theirs)."""
    path: Path | None = None
    """The local file of a ``file://`` source."""
    hf_repo: str | None = None
    """``OWNER/REPO`` of an ``hf:`` source (HF_TOKEN is sent to it)."""


def resolve_source(source: str, env: Mapping[str, str] | None = None) -> ResolvedSource:
    """The URL (or local path) of a spec source; ``hf:`` goes to ``$HF_ENDPOINT`` (default huggingface.co)."""
    environ = os.environ if env is None else env
    if source.startswith("hf:"):
        owner, repo, filename = source[3:].split("/", 2)
        endpoint = (environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
        url = f"{endpoint}/{owner}/{repo}/resolve/main/{quote(filename)}"
        _check_http_url(url, source)
        return ResolvedSource(url=url, hf_repo=f"{owner}/{repo}")
    if source.startswith("file://"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ModelFetchError(
                "UNSUPPORTED_SOURCE",
                f"file source {source} does not name a local absolute path",
                "write file:///abs/path/model.gguf",
            )
        return ResolvedSource(url=source, path=Path(unquote(parts.path)))
    if source.startswith(("https://", "http://")):
        _check_http_url(source, source)
        return ResolvedSource(url=source)
    raise ModelFetchError(
        "UNSUPPORTED_SOURCE",
        f"cannot fetch source {source!r}",
        "use hf:OWNER/REPO/FILE.gguf, file:///abs/path.gguf or https://host/path.gguf",
    )


def _check_http_url(url: str, source: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOCAL_HOSTS:
        return
    raise ModelFetchError(
        "UNSUPPORTED_SOURCE",
        f"refusing to fetch {url} (from source {source}): only https is allowed",
        "use an https:// URL (plain http is accepted only from 127.0.0.1/localhost)",
    )


def _hf_token() -> str:
    return os.environ.get("HF_TOKEN", "").strip()


def auth_headers(resolved: ResolvedSource) -> dict[str, str]:
    """The credentials sent to the source: ``$HF_TOKEN`` to ``hf:`` sources only."""
    token = _hf_token()
    if resolved.hf_repo is not None and token:
        return {"Authorization": f"Bearer {token}"}
    return {}


def not_found_hint(resolved: ResolvedSource) -> str:
    """What to check when the source answers 404."""
    if resolved.hf_repo:
        return (
            f"check owner, repository and file name (case matters) at "
            f"https://huggingface.co/{resolved.hf_repo}/tree/main"
        )
    return "check the URL in the model's source"


def access_denied_hint(resolved: ResolvedSource) -> str:
    """What to do when the source answers 401 or 403."""
    if resolved.hf_repo is None:
        return "the server wants credentials rbee does not send: download the file and use file:///..."
    if _hf_token():
        return (
            f"the token in HF_TOKEN has no access to {resolved.hf_repo}: accept the model's "
            "licence on its Hugging Face page, or use a token that can read it"
        )
    return (
        f"{resolved.hf_repo} is gated or private: set HF_TOKEN to a Hugging Face token "
        "that can read it (and accept the licence on its page)"
    )
