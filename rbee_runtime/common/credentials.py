"""The internal plane's credentials: one cluster secret, a credential per hive, one for its workers.

The control machine keeps the **cluster secret** (64 hex digits). Everything else is derived from it
with HMAC-SHA256, so a host only ever holds what it needs:

- the queen holds the cluster secret: it derives any hive's credential to check a heartbeat and to call
  that hive, and any hive's worker credential to call its workers;
- a hive holds only **its own credential** ``hive_credential(secret, hive_id)``: it cannot speak for
  another hive, and it derives the credential of its workers;
- a worker holds only ``worker_credential(hive credential)``: it can answer the queen and its hive and
  announce itself to its hive, but it cannot send a heartbeat.

Credentials travel as ``Authorization: Bearer <credential>`` and are read from files (systemd's
``LoadCredential=``: ``$CREDENTIALS_DIRECTORY/<name>``), never from argv or the environment. They are
distinct values from the queen's client API keys, so neither opens the other's endpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

SECRET_HEX_DIGITS = 64
_HEX = re.compile(rf"^[0-9a-f]{{{SECRET_HEX_DIGITS}}}$")
_HIVE_CONTEXT = b"rbee hive credential v1\0"
_WORKER_CONTEXT = b"rbee worker credential v1"


class CredentialError(ValueError):
    """A credential file that cannot be used; the message says which and why."""


def new_cluster_secret() -> str:
    """A fresh cluster secret: 256 random bits as 64 lowercase hex digits."""
    return secrets.token_hex(SECRET_HEX_DIGITS // 2)


def check_secret(value: str, what: str) -> str:
    """``value`` stripped, when it is 64 lowercase hex digits; else :class:`CredentialError` naming ``what``."""
    value = value.strip()
    if not _HEX.match(value):
        raise CredentialError(f"{what} must be {SECRET_HEX_DIGITS} lowercase hex digits (an rbee credential)")
    return value


def _mac(key: str, message: bytes) -> str:
    return hmac.new(bytes.fromhex(key), message, hashlib.sha256).hexdigest()


def hive_credential(cluster_secret: str, hive_id: str) -> str:
    """The credential of hive ``hive_id``: what it sends with heartbeats and what its API accepts."""
    return _mac(cluster_secret, _HIVE_CONTEXT + hive_id.encode())


def worker_credential(hive_cred: str) -> str:
    """The credential of the workers of the hive holding ``hive_cred``."""
    return _mac(hive_cred, _WORKER_CONTEXT)


def matches(candidate: str, expected: str) -> bool:
    """Constant-time comparison of two credentials."""
    return hmac.compare_digest(candidate.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def credential_path(value: str | Path) -> Path:
    """A credential file's path; ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``) is expanded."""
    text = str(value)
    if "$CREDENTIALS_DIRECTORY" in text or "${CREDENTIALS_DIRECTORY}" in text:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise CredentialError(
                f"{text!r} names $CREDENTIALS_DIRECTORY, which is not set: start the service from its systemd "
                "unit (LoadCredential=) or give the credential file's own path"
            )
        text = text.replace("${CREDENTIALS_DIRECTORY}", directory).replace("$CREDENTIALS_DIRECTORY", directory)
    return Path(text).expanduser()


def read_credential(value: str | Path, what: str) -> str:
    """Read and check the credential file ``value`` (see :func:`credential_path`); ``what`` names it in errors."""
    path = credential_path(value)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CredentialError(f"{what} {str(path)!r} cannot be read: {reason}") from exc
    return check_secret(text, f"{what} {str(path)!r}")


def readable_by_others(path: Path, what: str) -> str | None:
    """Why the secret file ``path`` must not be used: its mode lets others read it (None: it is private)."""
    mode = path.stat().st_mode
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return (
        f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):o}): "
        f"run `chmod 600 {path}` (and think about whether it leaked)"
    )


def write_credential(path: Path, value: str) -> None:
    """Write a credential file readable by its owner only (0600), atomically (a temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(value + "\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (``127.x``, ``::1``, ``localhost``)."""
    host = host.strip("[]").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")
