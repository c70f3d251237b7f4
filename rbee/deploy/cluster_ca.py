"""The cluster CA on the control machine, and the certificate of each host (``deploy.tls``).

Made at the first deploy with TLS, next to the cluster secret (``rbee.deploy.cluster_secret``):
``<state dir>/clusters/<cluster>/tls/`` holds ``ca.crt`` and ``ca.key`` (EC P-256, 10 years) and
``hosts/<host>.crt`` / ``<host>.key`` (2 years; names: the host's spec address, its name, and
``127.0.0.1``/``localhost`` for a host that is this machine). Every file is 0600.

A host's certificate is **reused** while its names are the same, the CA signed it and it expires in
more than :data:`RENEW_BEFORE`: a second deploy writes the same bytes and restarts nothing. Renewing is
just deploying again within the last 30 days (the services restart with the new certificate). A CA
itself that close to its end is replaced, and every host's certificate with it.

``rbee up`` uses :func:`ephemeral_tls`: a fresh CA per run whose key is never written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rbee.deploy.cluster_secret import state_dir
from rbee.spec.models import ClusterSpec
from rbee_runtime.common.credentials import readable_by_others, write_credential
from rbee_runtime.common.tls import client_context

#: The files of a deployed host (in its credentials folder; ``LoadCredential=`` names).
TLS_CERT_NAME = "tls.crt"
TLS_KEY_NAME = "tls.key"
CA_CERT_NAME = "ca.crt"
CA_DAYS = 3650
HOST_DAYS = 730
RENEW_BEFORE = dt.timedelta(days=30)
_BACKDATE = dt.timedelta(minutes=5)  # a host whose clock is a little behind still accepts a new certificate
_lock = threading.Lock()


class ClusterCaError(Exception):
    """The cluster CA exists but cannot be used; the message says what to do."""


@dataclass(frozen=True)
class HostTls:
    """What one host gets: the CA's certificate, and its own certificate and key (PEM text)."""

    ca_cert: str
    cert: str
    key: str


@dataclass(frozen=True)
class _Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()


def tls_dir(cluster: str) -> Path:
    """Where cluster ``cluster``'s CA and host certificates are kept."""
    return state_dir() / "clusters" / cluster / "tls"


def ca_file(cluster: str) -> Path:
    """The CA certificate of ``cluster`` (what a client of its queen trusts)."""
    return tls_dir(cluster) / "ca.crt"


def known_ca_files() -> list[Path]:
    """The CA certificates of every cluster this control machine deployed with TLS."""
    return sorted((state_dir() / "clusters").glob("*/tls/ca.crt"))


def trust(url: str, ca_file: str | Path | None = None) -> ssl.SSLContext | bool:
    """What a client of ``url`` on the control machine trusts (httpx's ``verify``).

    ``ca_file``, else ``$RBEE_CA_FILE``: that CA only. Else, for an ``https://`` URL, the system's CAs plus
    the CA of every cluster deployed from here with TLS (:func:`known_ca_files`). Else the default (True).
    """
    chosen = ca_file or os.environ.get("RBEE_CA_FILE")
    if chosen:
        return client_context(chosen)
    known = known_ca_files() if url.startswith("https://") else []
    if not known:
        return True
    context = ssl.create_default_context()
    for path in known:
        context.load_verify_locations(cafile=str(path))
    return context


def host_names(spec: ClusterSpec, host_name: str) -> tuple[str, ...]:
    """The names a host's certificate carries: its spec address and name (loopback too for this machine)."""
    host = spec.host(host_name)
    names = [host.address, host.name, *(("127.0.0.1", "localhost") if host.is_local else ())]
    return tuple(dict.fromkeys(names))


def tls_for(spec: ClusterSpec, host_name: str) -> HostTls | None:
    """The TLS files of a deployed host (made or reused in the state dir); None without ``deploy.tls``."""
    if not spec.deploy.tls:
        return None
    return host_tls(spec.cluster, host_name, host_names(spec, host_name))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _new_ca(cluster: str) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rbee cluster {cluster} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Pair(cert, key)


def issue(ca: _Pair, host: str, names: Sequence[str], days: int = HOST_DAYS) -> _Pair:
    """A server certificate for ``host`` valid for ``names``, signed by ``ca``, expiring in ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digital_signature
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return _Pair(cert, key)


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _load(cert_path: Path, key_path: Path) -> _Pair | None:
    """The pair kept in these files; None when either is missing or unreadable as PEM, or they do not match."""
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    if why := readable_by_others(key_path, "the TLS key"):
        raise ClusterCaError(why)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return _Pair(cert, key)


def _keep(pair: _Pair, cert_path: Path, key_path: Path) -> None:
    write_credential(key_path, pair.key_pem.strip())
    write_credential(cert_path, pair.cert_pem.strip())


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time (threads of a deploy, and other rbee processes on this machine)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _lock, os.fdopen(os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600), "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cluster_ca(folder: Path, cluster: str) -> _Pair:
    ca = _load(folder / "ca.crt", folder / "ca.key")
    if ca is None or not _fresh(ca.cert):
        ca = _new_ca(cluster)
        _keep(ca, folder / "ca.crt", folder / "ca.key")
    return ca


def host_tls(cluster: str, host: str, names: Sequence[str]) -> HostTls:
    """The CA certificate and ``host``'s certificate and key, reused from the state dir when still good."""
    folder = tls_dir(cluster)
    try:
        with _locked(folder):
            ca = _cluster_ca(folder, cluster)
            cert_path, key_path = folder / "hosts" / f"{host}.crt", folder / "hosts" / f"{host}.key"
            pair = _load(cert_path, key_path)
            if pair is None or not (
                _fresh(pair.cert) and _signed_by(pair.cert, ca.cert) and _names(pair.cert) == set(names)
            ):
                pair = issue(ca, host, names)
                _keep(pair, cert_path, key_path)
    except OSError as exc:
        raise ClusterCaError(f"cannot keep the cluster CA in {folder}: {exc.strerror or exc}") from exc
    return HostTls(ca.cert_pem, pair.cert_pem, pair.key_pem)


def ephemeral_tls(cluster: str, names: Sequence[str] = ("127.0.0.1", "localhost")) -> HostTls:
    """A fresh CA (its key forgotten) and one certificate for ``names``: ``rbee up``'s and the tests' TLS."""
    ca = _new_ca(cluster)
    pair = issue(ca, names[0], names)
    return HostTls(ca.cert_pem, pair.cert_pem, pair.key_pem)


def write_tls(folder: Path, tls: HostTls) -> tuple[Path, Path, Path]:
    """Write ``tls`` as ``tls.crt``, ``tls.key`` and ``ca.crt`` under ``folder`` (0600); their paths."""
    paths = (folder / "tls.crt", folder / "tls.key", folder / "ca.crt")
    for path, text in zip(paths, (tls.cert, tls.key, tls.ca_cert), strict=True):
        write_credential(path, text.strip())
    return paths
