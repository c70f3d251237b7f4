"""TLS on the internal plane (``deploy.tls``), on real processes.

A queen, a hive and its worker serve HTTPS with certificates of one cluster CA
(``rbee.deploy.cluster_ca``) and check each other against it. A completion goes through; plain HTTP
and clients that do not trust the CA get nothing; a "worker" whose certificate comes from another CA
(or that is announced with a cleartext URL) never receives a prompt; broken TLS files stop a service
at its start with a message naming the file.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from cryptography import x509

from rbee.deploy import cluster_ca
from rbee.deploy.cluster_ca import ClusterCaError, HostTls, ephemeral_tls, tls_for, write_tls
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.probe import parse_probe
from rbee.spec import parse_spec
from rbee.tiny_model import TINY_MODEL_ID
from rbee_runtime.common.credentials import hive_credential, new_cluster_secret, write_credential
from rbee_runtime.common.tls import client_context
from tests.support.processes import ProcessPool
from tests.support.services import (
    PY,
    RBEE,
    HiveProc,
    QueenProc,
    Service,
    hive_config,
    local_spec,
    start_hive,
    start_queen,
    start_rbee_up,
)
from tests.support.waiting import wait_until
from tests.support.wire import heartbeat, worker_info

API_KEY = "client-key-tls"
SECRET = new_cluster_secret()
HIVE_ID = "hive"
ROGUE_MODEL = "rogue-model"


@pytest.fixture(scope="module")
def tls_files(module_processes: ProcessPool) -> tuple[Path, Path, Path]:
    """The cluster's TLS files for 127.0.0.1 (cert, key, CA), as ``rbee up`` makes them."""
    return write_tls(module_processes.workdir / "tls", ephemeral_tls("tls-test"))


def _secure(service: Service, ca: Path) -> None:
    """Point a started service's test client at its HTTPS port, trusting the cluster CA."""
    service.url = service.url.replace("http://", "https://")
    headers = dict(service.http.headers)
    service.http = httpx.Client(base_url=service.url, timeout=15, trust_env=False, headers=headers,
                                verify=client_context(ca))  # fmt: skip


class TlsCluster:
    """A queen and a hive keeping one worker, everything over TLS."""

    def __init__(self, queen: QueenProc, hive: HiveProc, ca: Path) -> None:
        self.queen, self.hive, self.ca = queen, hive, ca

    def auth(self, token: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def workers(self) -> list[dict[str, Any]]:
        return list(self.queen.http.get("/v1/workers", headers=self.auth()).json()["workers"])

    def serving(self, model_id: str = TINY_MODEL_ID) -> list[dict[str, Any]]:
        return [w for w in self.workers() if w["model_id"] == model_id and w["routable"]]


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path, tls_files: tuple[Path, Path, Path]) -> TlsCluster:
    cert, key, ca = (str(p) for p in tls_files)
    tls: dict[str, Any] = {"tls_cert_file": cert, "tls_key_file": key, "tls_ca_file": ca}
    folder = module_processes.workdir / "credentials"
    write_credential(folder / "cluster-secret", SECRET)
    write_credential(folder / "hive.credential", hive_credential(SECRET, HIVE_ID))
    (folder / "api-keys").write_text(API_KEY + "\n")
    queen = start_queen(module_processes, cluster_secret_file=str(folder / "cluster-secret"),
                        api_keys_file=str(folder / "api-keys"), api_key=API_KEY, **tls)  # fmt: skip
    _secure(queen, Path(ca))
    config = hive_config(
        module_processes.workdir, HIVE_ID, model_path=tiny_model_path, queen_url=queen.url, ctx_size=1024,
        credential_file=str(folder / "hive.credential"), heartbeat_interval_s=0.25,
        placements=[{"model_id": TINY_MODEL_ID, "replicas": 1, "slots": 1}], **tls,
    )  # fmt: skip
    hive = start_hive(module_processes, config)
    _secure(hive, Path(ca))
    queen.wait_healthy()
    hive.wait_healthy()
    tls_cluster = TlsCluster(queen, hive, Path(ca))

    def serving() -> list[dict[str, Any]] | None:
        queen.proc.check_alive()
        hive.proc.check_alive()
        return tls_cluster.serving() or None

    wait_until(serving, 60, f"a worker serving over TLS\n{hive.proc.log_tail()}", 0.1)
    return tls_cluster


def _chat(cluster: TlsCluster, model: str = TINY_MODEL_ID, verify: ssl.SSLContext | None = None) -> str:
    http = httpx2.Client(verify=verify or client_context(cluster.ca), trust_env=False)  # the openai client's httpx
    client = openai.OpenAI(base_url=f"{cluster.queen.url}/v1", api_key=API_KEY, max_retries=0, timeout=60,
                           http_client=http)  # fmt: skip
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "the secret prompt"}], max_tokens=4
    )
    return reply.choices[0].finish_reason or ""


@pytest.mark.engine
@pytest.mark.slow
def test_a_completion_goes_through_the_tls_cluster(cluster: TlsCluster) -> None:
    assert _chat(cluster) in ("length", "stop")
    (worker,) = cluster.serving()
    assert worker["url"].startswith("https://127.0.0.1:")
    (hive,) = cluster.queen.http.get("/v1/hives", headers=cluster.auth()).json()["hives"]
    assert hive["url"].startswith("https://127.0.0.1:")


def _ports(cluster: TlsCluster) -> dict[str, str]:
    (worker,) = cluster.serving()
    return {"queen": cluster.queen.url, "hive": cluster.hive.url, "worker": worker["url"]}


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("service", ["queen", "hive", "worker"])
def test_plain_http_gets_no_answer(cluster: TlsCluster, service: str) -> None:
    url = _ports(cluster)[service].replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # the TLS listener closes the connection: no status, no body
        httpx.get(f"{url}/health", timeout=10, trust_env=False)


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("service", ["queen", "hive", "worker"])
@pytest.mark.parametrize("trust", ["the system CAs", "another cluster's CA"])
def test_a_client_that_does_not_trust_the_cluster_ca_fails_verification(
    cluster: TlsCluster, tmp_path: Path, service: str, trust: str
) -> None:
    verify: ssl.SSLContext | bool = True
    if trust != "the system CAs":
        (tmp_path / "other-ca.crt").write_text(ephemeral_tls("other").ca_cert)
        verify = client_context(tmp_path / "other-ca.crt")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{_ports(cluster)[service]}/health", timeout=10, trust_env=False, verify=verify)


@pytest.mark.engine
@pytest.mark.slow
def test_an_openai_client_without_the_cluster_ca_sends_nothing(cluster: TlsCluster) -> None:
    with pytest.raises(openai.APIConnectionError):
        _chat(cluster, verify=ssl.create_default_context())


class _Impostor:
    """A listener on 127.0.0.1 that records every connection and every request it can read.

    ``tls``: it answers TLS with that certificate (another CA's); else it speaks plain HTTP.
    """

    def __init__(self, tls: HostTls | None, folder: Path) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            cert, key, _ca = write_tls(folder, tls)
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(str(cert), str(key))
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            stream = self._context.wrap_socket(conn, server_side=True) if self._context else conn
            data = stream.recv(65536)
            if data:
                self.requests.append(data)
                stream.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            stream.close()
        except (OSError, ssl.SSLError):
            conn.close()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def impostor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Impostor]:
    listener = _Impostor(ephemeral_tls("impostor") if request.param == "another CA" else None, tmp_path)
    try:
        yield listener
    finally:
        listener.close()


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("impostor", ["another CA", "plain HTTP"], indirect=True)
def test_a_worker_the_cluster_ca_did_not_sign_gets_no_prompt(cluster: TlsCluster, impostor: _Impostor) -> None:
    # A second hive, with its real credential, announces a worker on the impostor's listener: the queen
    # takes the beat (same host, right credential) but must never hand it a prompt.
    hive_id = "h2"
    rogue = worker_info("rogue-1", ROGUE_MODEL, hive_id=hive_id, url=impostor.url, slots=4)
    beat = heartbeat(hive_id, models=[ROGUE_MODEL], workers=[rogue], url=impostor.url)
    token = hive_credential(SECRET, hive_id)
    answer = cluster.queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"),
                                     headers=cluster.auth(token))  # fmt: skip
    assert answer.status_code == 200, answer.text
    with pytest.raises(openai.APIStatusError) as refused:
        _chat(cluster, ROGUE_MODEL)
    assert refused.value.status_code >= 500
    assert impostor.requests == []  # not one byte of HTTP: no prompt, no credential
    if impostor.url.startswith("https://"):
        assert impostor.connections >= 1  # the queen did try, and refused the certificate
    assert _chat(cluster) in ("length", "stop")  # the real worker still serves


# --------------------------------------------------------------------------- broken TLS files stop a start


@pytest.fixture(scope="module")
def broken(module_processes: ProcessPool, tls_files: tuple[Path, Path, Path]) -> dict[str, str]:
    """TLS files for the start-up refusals: good ones, a key of another certificate, a missing file."""
    cert, key, ca = tls_files
    other = write_tls(module_processes.workdir / "other-tls", ephemeral_tls("other"))
    return {"cert": str(cert), "key": str(key), "ca": str(ca), "other_key": str(other[1]),
            "missing": str(module_processes.workdir / "no-such.crt")}  # fmt: skip


CASES = {
    "a key of another certificate": (("cert", "other_key", "ca"), "the key does not belong to the certificate"),
    "an unreadable certificate": (("missing", "key", "ca"), "tls_cert_file '.*no-such.crt' cannot be read"),
    "an unreadable CA": (("cert", "key", "missing"), "tls_ca_file '.*no-such.crt' cannot be read"),
    "no key": (("cert", None, "ca"), "missing: tls_key_file"),
    "systemd's folder, unset": (("cert", "key", "$CREDENTIALS_DIRECTORY/ca.crt"), "CREDENTIALS_DIRECTORY.* not set"),
}


def _files(broken: dict[str, str], names: tuple[str | None, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, name in zip(("tls_cert_file", "tls_key_file", "tls_ca_file"), names, strict=True):
        if name is not None:
            out[field] = broken.get(name, name)
    return out


@pytest.mark.parametrize("case", CASES)
def test_the_queen_refuses_to_start_with_broken_tls_files(
    processes: ProcessPool, broken: dict[str, str], case: str
) -> None:
    names, message = CASES[case]
    queen = start_queen(processes, **_files(broken, names))
    assert queen.wait_exit() == 2
    assert re.search(message, queen.log()), queen.log()


@pytest.mark.parametrize("case", CASES)
def test_the_hive_refuses_to_start_with_broken_tls_files(
    processes: ProcessPool, broken: dict[str, str], case: str
) -> None:
    names, message = CASES[case]
    hive = start_hive(processes, hive_config(processes.workdir, "h1", **_files(broken, names)))
    assert hive.wait_exit() == 2
    assert re.search(message, hive.log()), hive.log()


@pytest.mark.parametrize("case", CASES)
def test_a_worker_refuses_to_start_with_broken_tls_files(
    processes: ProcessPool, broken: dict[str, str], tiny_model_path: Path, case: str
) -> None:
    names, message = CASES[case]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in _files(broken, names).items()]
    proc = processes.start("worker", [PY, "-m", "rbee_runtime.worker", "--worker-id", "w", "--model-id", "m",
                                      "--model-path", str(tiny_model_path), *flags])  # fmt: skip
    assert proc.wait(20) == 2
    flag_message = message.replace("tls_", "--tls-").replace("_file", "-file")
    assert re.search(flag_message, proc.log()), proc.log()


# --------------------------------------------------------------------------- the cluster CA on the control machine

TLS_SPEC = """cluster: t
queen: {host: a}
hosts:
  - {name: a, address: 10.0.0.1}
  - {name: b, address: b.lan}
models:
  - {id: m, source: 'file:///m.gguf'}
placements:
  - {model: m, hosts: [b]}
deploy: {tls: true}
"""
PROBE = "os=Linux\narch=x86_64\npython=3.11.2\npython_venv=yes\nram_total_kb=8000000\nsystemd=yes\nprobe=done\n"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty state dir of the control machine."""
    monkeypatch.setenv("RBEE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RBEE_CA_FILE", raising=False)
    return tmp_path / "state"


def _deploy_plan(name: str, spec_text: str = TLS_SPEC) -> HostPlan:
    spec = parse_spec(spec_text, "cluster.yaml")
    return plan_deployed_host(spec, name, parse_probe(PROBE), None, None, SECRET, tls_for(spec, name))


def _kept(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_a_second_deploy_plans_the_same_bytes_and_keeps_the_same_state(state: Path) -> None:
    first = {name: _deploy_plan(name) for name in ("a", "b")}
    kept = _kept(state)
    assert {p for p in kept if not p.endswith(".lock")} == {
        "clusters/t/tls/ca.crt", "clusters/t/tls/ca.key", "clusters/t/tls/hosts/a.crt", "clusters/t/tls/hosts/a.key",
        "clusters/t/tls/hosts/b.crt", "clusters/t/tls/hosts/b.key",
    }  # fmt: skip
    assert all((state / p).stat().st_mode & 0o077 == 0 for p in kept)
    for name, plan in first.items():
        again = _deploy_plan(name)
        assert [(f.path, f.text, f.mode) for f in again.files] == [(f.path, f.text, f.mode) for f in plan.files]
        assert [s.digest("r", {"m": "x"}) for s in again.services] == [s.digest("r", {"m": "x"}) for s in plan.services]
    assert _kept(state) == kept
    names = _cert(first["b"].file("/etc/rbee/credentials/tls.crt").text).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert set(names.value.get_values_for_type(x509.DNSName)) == {"b.lan", "b"}
    a_names = _cert(first["a"].file("/etc/rbee/credentials/tls.crt").text).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert [str(ip) for ip in a_names.value.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]


def test_a_certificate_close_to_its_end_is_renewed_and_restarts_its_services(state: Path) -> None:
    before = _deploy_plan("b")
    folder = state / "clusters" / "t" / "tls"
    ca = cluster_ca._load(folder / "ca.crt", folder / "ca.key")
    assert ca is not None
    soon = cluster_ca.issue(ca, "b", ("b.lan", "b"), days=20)  # within the 30 days of RENEW_BEFORE
    (folder / "hosts" / "b.crt").write_text(soon.cert_pem)
    (folder / "hosts" / "b.key").write_text(soon.key_pem)
    after = _deploy_plan("b")
    cert = _cert(after.file("/etc/rbee/credentials/tls.crt").text)
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=700)
    assert cert.serial_number != soon.cert.serial_number
    assert after.file("/etc/rbee/credentials/ca.crt").text == before.file("/etc/rbee/credentials/ca.crt").text
    digests = [s.digest("r", {"m": "x"}) for s in after.services]
    assert all(d1 != d2 for d1, d2 in zip(digests, [s.digest("r", {"m": "x"}) for s in before.services], strict=True))


def test_a_new_address_gets_a_new_certificate(state: Path) -> None:
    before = _deploy_plan("b").file("/etc/rbee/credentials/tls.crt").text
    moved = _deploy_plan("b", TLS_SPEC.replace("b.lan", "10.0.0.9")).file("/etc/rbee/credentials/tls.crt").text
    assert moved != before
    names = _cert(moved).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.9"]


def test_a_ca_close_to_its_end_is_replaced_with_every_host_certificate(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_ca, "CA_DAYS", 20)
    first = _deploy_plan("b")
    monkeypatch.setattr(cluster_ca, "CA_DAYS", 3650)
    second = _deploy_plan("b")
    for path in ("/etc/rbee/credentials/ca.crt", "/etc/rbee/credentials/tls.crt"):
        assert first.file(path).text != second.file(path).text
    _cert(second.file("/etc/rbee/credentials/tls.crt").text).verify_directly_issued_by(
        _cert(second.file("/etc/rbee/credentials/ca.crt").text)
    )


def test_a_ca_key_readable_by_others_is_refused(state: Path) -> None:
    _deploy_plan("b")
    key = state / "clusters" / "t" / "tls" / "ca.key"
    key.chmod(0o644)
    with pytest.raises(ClusterCaError, match=r"readable by others \(mode 644\).*chmod 600"):
        _deploy_plan("b")


def test_without_deploy_tls_nothing_is_made(state: Path) -> None:
    plan = _deploy_plan("b", TLS_SPEC.replace("deploy: {tls: true}\n", ""))
    assert not state.exists()
    assert not any(f.path.endswith((".crt", ".key")) for f in plan.files)
    assert plan.hive_url.startswith("http://") and plan.queen_url.startswith("http://")


@pytest.mark.engine
@pytest.mark.slow
def test_rbee_up_with_tls_serves_https_and_the_cli_trusts_its_ca(
    processes: ProcessPool, tiny_model_path: Path, tmp_path: Path
) -> None:
    spec = local_spec(tmp_path, tiny_model_path)
    spec.write_text(spec.read_text() + "deploy: {tls: true}\n")
    up = start_rbee_up(processes, spec)
    assert up.queen_url.startswith("https://127.0.0.1:")
    ca = up.run_dir / "credentials" / "ca.crt"
    env = {**up.env(), "RBEE_STATE_DIR": str(tmp_path / "no-state")}
    trusted = subprocess.run([RBEE, "workers", "ls"], env={**env, "RBEE_CA_FILE": str(ca)}, capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert trusted.returncode == 0 and "tiny" in trusted.stdout, trusted.stdout + trusted.stderr
    untrusted = subprocess.run([RBEE, "workers", "ls"], env=env, capture_output=True, text=True, timeout=60,
                               check=False)  # fmt: skip
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr
    assert up.stop() == 0
