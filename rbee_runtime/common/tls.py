"""TLS of the internal plane: what a service serves with, and how its clients check their peers.

Optional: a cluster deployed with ``deploy.tls`` gives every service a certificate and key of its host
(signed by the cluster CA) and the CA's certificate. The service then serves HTTPS (uvicorn's
``ssl_certfile``/``ssl_keyfile``), and every call it makes to a peer checks the peer's certificate
against the cluster CA (:func:`client_context`; never ``verify=False``) and refuses plain ``http://``
(:class:`PlainHttpRefused`), so a heartbeat cannot downgrade the queen's calls to cleartext.

Paths may name ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``), like the credentials.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rbee_runtime.common.credentials import CredentialError, credential_path


class TlsError(ValueError):
    """TLS files that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class TlsFiles:
    """A service's certificate, its key and the cluster CA's certificate (resolved paths, checked)."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def uvicorn(self) -> dict[str, Any]:
        """The uvicorn settings that make it serve HTTPS with this certificate."""
        return {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}

    def client(self) -> ssl.SSLContext:
        """A context that trusts the cluster CA only (see :func:`client_context`)."""
        return client_context(self.ca_file)


def _path(value: str | Path, what: str) -> Path:
    try:
        path = credential_path(value)
    except CredentialError as exc:
        raise TlsError(f"{what}: {exc}") from exc
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TlsError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    return path


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """An SSL context for clients that trusts only ``ca_file`` and checks host names (TLS 1.2 at least)."""
    path = _path(ca_file, "tls_ca_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the host name and the chain; no system CAs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"tls_ca_file {str(path)!r} holds no usable CA certificate (PEM): {exc}") from exc
    return context


def load_tls(cert_file: str | Path | None, key_file: str | Path | None, ca_file: str | Path | None) -> TlsFiles | None:
    """Check a service's TLS files: all three or none (None: plain HTTP).

    :class:`TlsError` when one is missing, unreadable, not PEM, or the key does not belong to the certificate.
    """
    given = {"tls_cert_file": cert_file, "tls_key_file": key_file, "tls_ca_file": ca_file}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise TlsError(f"TLS needs tls_cert_file, tls_key_file and tls_ca_file together; missing: {', '.join(missing)}")
    assert cert_file and key_file and ca_file
    files = TlsFiles(_path(cert_file, "tls_cert_file"), _path(key_file, "tls_key_file"), _path(ca_file, "tls_ca_file"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server.load_cert_chain(str(files.cert_file), str(files.key_file))
    except ssl.SSLError as exc:
        why = "the key does not belong to the certificate" if "MISMATCH" in str(exc).upper() else str(exc)
        raise TlsError(
            f"tls_cert_file {str(files.cert_file)!r} and tls_key_file {str(files.key_file)!r}: {why}"
        ) from exc
    client_context(files.ca_file)
    return files


class PlainHttpRefused(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Mounted on ``http://`` when TLS is on: a peer announced with a cleartext URL is never called."""

    def _refuse(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            f"refused to call {request.url.host}:{request.url.port} over plain HTTP: this cluster's internal plane "
            "uses TLS (https:// only)",
            request=request,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._refuse(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._refuse(request)


def client_options(tls: TlsFiles | None) -> dict[str, Any]:
    """``httpx.Client``/``AsyncClient`` options for calls to peers: the cluster CA, and no plain HTTP.

    Empty without TLS (the client works as before).
    """
    if tls is None:
        return {}
    return {"verify": tls.client(), "mounts": {"http://": PlainHttpRefused()}}


def https(url: str, tls: object | None) -> str:
    """``url`` with the ``https`` scheme when ``tls`` is set (``http://h:p`` → ``https://h:p``)."""
    if tls is not None and url.startswith("http://"):
        return "https://" + url.removeprefix("http://")
    return url
