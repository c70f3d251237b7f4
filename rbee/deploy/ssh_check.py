"""SSH preflight: one SSH connection to a host, classified, with a hint a person can act on and the latency.

``check_ssh(SshTarget(...))`` connects the way the deploy does (paramiko, the client pyinfra uses; the
spec's address, port, user, key and known_hosts file; unknown host keys accepted as pyinfra's
``accept-new`` does, but never written), then measures round trips over the open connection. The
outcome is one of:

- ``ok``: connected, authenticated, ``latency_ms`` measured (median of line echoes through ``cat``);
- ``unreachable``: no route, refused (host up but no sshd, or a stopped host), timeout (host down,
  cable pulled, firewall), the name does not resolve, or the handshake did not complete;
- ``auth-failed``: the host refuses the key (or the key file is missing or unreadable);
- ``host-key-mismatch``: the host's key is not the one in the known_hosts file.

``rbee preflight``, the pyinfra preflight (``rbee/deploys/preflight.py``), ``rbee plan`` and ``rbee deploy`` report
an unreachable host with this classification; ``features/preflight.feature`` asserts each on real test hosts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

    from rbee.spec.models import ClusterSpec, HostSpec

DEFAULT_TIMEOUT_S = 5.0
logging.getLogger("paramiko").addHandler(logging.NullHandler())  # its transport thread logs failures itself
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class Outcome(StrEnum):
    """How an SSH connection attempt ended."""

    OK = "ok"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth-failed"
    HOST_KEY_MISMATCH = "host-key-mismatch"


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect: exactly what the spec (or pyinfra's host data) gives."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    """Private key file; None: the agent and the default keys (~/.ssh/id_*), as pyinfra does."""
    known_hosts_file: str | None = None
    """None: ~/.ssh/known_hosts; ``/dev/null``: host keys are not checked."""

    @property
    def login(self) -> str:
        return f"{self.user}@{self.address}"

    @property
    def known_hosts(self) -> str:
        return self.known_hosts_file or DEFAULT_KNOWN_HOSTS

    @classmethod
    def from_spec(cls, host: HostSpec, base_dir: Path) -> SshTarget:
        """The target of a spec host (its key resolved from the spec file's folder, as the inventory does)."""
        key = host.ssh.key
        if key is not None:
            path = Path(key).expanduser()
            key = str(path if path.is_absolute() else (base_dir / path).resolve())
        return cls(host.name, host.address, host.ssh.port, host.ssh.user, key, host.ssh.known_hosts_file)

    @classmethod
    def from_host_data(cls, name: str, data: Mapping[str, Any]) -> SshTarget:
        """The target of a pyinfra inventory host (``ssh_hostname``, ``ssh_port``, ... of ``rbee.spec.inventory``)."""
        return cls(
            name=name,
            address=str(data.get("ssh_hostname") or name),
            port=int(data.get("ssh_port") or 22),
            user=str(data.get("ssh_user") or "root"),
            key=data.get("ssh_key"),
            known_hosts_file=data.get("ssh_known_hosts_file"),
        )


@dataclass
class SshCheck:
    """The result of one SSH preflight of one host."""

    host: str
    address: str
    port: int
    user: str
    outcome: Outcome
    reason: str = ""
    """Finer cause: refused, timeout, no-route, unresolved, handshake, key-refused, key-unreadable, ..."""
    error: str = ""
    hint: str = ""
    connect_ms: float = 0.0
    """Time to connect and authenticate (or to fail)."""
    latency_ms: float | None = None
    """Median round trip of a line echoed over the open connection (None unless ``ok``)."""
    round_trips_ms: list[float] = field(default_factory=list)
    new_host_key: bool = False
    """The host's key was not in the known_hosts file (accepted, not written; the deploy adds it)."""
    output: str = ""
    """Standard output of the command run on the host, when one was given."""
    exit_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (without the command output)."""
        out = asdict(self)
        out["outcome"] = str(self.outcome)
        out.pop("output")
        return out


def _result(target: SshTarget, outcome: Outcome, reason: str, error: str, hint: str, started: float) -> SshCheck:
    return SshCheck(
        target.name, target.address, target.port, target.user, outcome, reason, error, hint,
        connect_ms=(time.perf_counter() - started) * 1000,
    )  # fmt: skip


def _unreachable_hint(target: SshTarget, reason: str, timeout_s: float) -> str:
    where = f"{target.address}:{target.port}"
    if reason == "refused":
        return (
            f"{target.name} ({target.address}) answers but nothing accepts SSH on port {target.port}: "
            f"start sshd there (systemctl start ssh), or set hosts[].ssh.port to the port it listens on; "
            f"a host that is shutting down or booting answers the same way"
        )
    if reason == "unresolved":
        return f"cannot resolve {target.address!r}: fix hosts[].address (an IP or a name this machine resolves)"
    if reason == "no-route":
        return (
            f"no route to {target.address}: check that {target.name} is up and on the network "
            f"(ping {target.address}) and that hosts[].address is right"
        )
    if reason == "handshake":
        return (
            f"{where} accepted the connection but no SSH handshake followed within {timeout_s:g} s: "
            f"{target.name} may be hung or overloaded, or port {target.port} is not sshd"
        )
    return (
        f"no answer from {where} within {timeout_s:g} s: check that {target.name} is up and on the network "
        f"(ping {target.address}) and that no firewall drops port {target.port}"
    )


def _auth_hint(target: SshTarget, reason: str) -> str:
    if reason == "key-unreadable":
        return (
            f"cannot use the key file {target.key}: set hosts[].ssh.key to an existing private key "
            f"readable by this user (chmod 600), without a passphrase or loaded in ssh-agent"
        )
    if target.key is None:
        return (
            f"{target.login} accepts none of this machine's keys (agent, ~/.ssh/id_*): set hosts[].ssh.key, "
            f"and put its public key in ~{target.user}/.ssh/authorized_keys there (ssh-copy-id)"
        )
    port = f" -p {target.port}" if target.port != 22 else ""
    return (
        f"{target.login} refuses the key {target.key}: put its public key in ~{target.user}/.ssh/authorized_keys "
        f"there (ssh-copy-id -i {target.key}.pub{port} {target.login}), or set hosts[].ssh.key to the key it "
        f"knows; check the user (hosts[].ssh.user: {target.user})"
    )


def _host_key_hint(target: SshTarget, fingerprint: str) -> str:
    entry = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    return (
        f"the host key of {entry} ({fingerprint}) is not the one recorded in {target.known_hosts}: if "
        f"{target.name} was reinstalled, remove the old entry (ssh-keygen -f {target.known_hosts} -R '{entry}') "
        f"and check the new fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); "
        f"otherwise do not deploy: someone may be intercepting the connection"
    )


def _socket_reason(exc: BaseException) -> str:
    """refused / timeout / no-route / unresolved from a socket-level error."""
    if isinstance(exc, socket.gaierror):
        return "unresolved"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EADDRNOTAVAIL):
        return "no-route"
    if code == errno.ETIMEDOUT:
        return "timeout"
    return "unreachable"


class _AcceptNew:
    """pyinfra's ``accept-new`` without writing: unknown keys are accepted and noted (a check changes nothing)."""

    def __init__(self) -> None:
        self.accepted = False

    def missing_host_key(self, _client: paramiko.SSHClient, _hostname: str, _key: paramiko.PKey) -> None:
        self.accepted = True


def _load_known_hosts(client: paramiko.SSHClient, path: str) -> None:
    file = Path(path).expanduser()
    if str(file) == os.devnull or not file.is_file():
        return
    with contextlib.suppress(Exception):  # paramiko gives up on some malformed lines: then check against none
        client.get_host_keys().load(str(file))


def _echo_round_trips(client: paramiko.SSHClient, count: int, timeout_s: float) -> list[float]:
    """Milliseconds of ``count`` line echoes through one ``cat`` on the host (after one warm-up echo)."""
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session(timeout=timeout_s)
    channel.settimeout(timeout_s)
    try:
        channel.exec_command("cat")

        def echo(line: bytes) -> float:
            started = time.perf_counter()
            channel.sendall(line)
            got = b""
            while not got.endswith(b"\n"):
                chunk = channel.recv(4096)
                if not chunk:
                    raise EOFError("the host closed the session")
                got += chunk
            if got != line:
                raise EOFError(f"the host echoed {got!r}, not {line!r}")
            return (time.perf_counter() - started) * 1000

        echo(b"warm-up\n")
        return [echo(f"rbee-ping-{i}\n".encode()) for i in range(count)]
    finally:
        channel.close()


def _run(client: paramiko.SSHClient, command: str, stdin: str | None, timeout_s: float) -> tuple[int, str]:
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session(timeout=timeout_s)
    channel.settimeout(timeout_s)
    try:
        channel.exec_command(command)
        if stdin is not None:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        chunks = []
        while chunk := channel.recv(65536):
            chunks.append(chunk)
        return channel.recv_exit_status(), b"".join(chunks).decode(errors="replace")
    finally:
        channel.close()


def check_ssh(
    target: SshTarget,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    round_trips: int = 3,
    command: str | None = None,
    stdin: str | None = None,
) -> SshCheck:
    """Connect to ``target`` once, classify the outcome, measure the latency, and run ``command`` if given.

    ``timeout_s`` bounds the TCP connect, the SSH banner and the authentication each; it is the
    figure an unreachable host's hint quotes.
    """
    import paramiko  # the deploy extra's SSH client (pyinfra's); imported here so `rbee` starts without it

    started = time.perf_counter()
    pkey: paramiko.PKey | None = None
    if target.key is not None:
        try:
            pkey = paramiko.PKey.from_path(Path(target.key).expanduser())
        except (OSError, paramiko.SSHException, ValueError) as exc:
            reason = "key-unreadable"
            return _result(target, Outcome.AUTH_FAILED, reason, f"{target.key}: {exc}", _auth_hint(target, reason),
                           started)  # fmt: skip
    client = paramiko.SSHClient()
    _load_known_hosts(client, target.known_hosts)
    policy = _AcceptNew()
    client.set_missing_host_key_policy(policy)  # type: ignore[arg-type]
    try:
        try:
            client.connect(
                target.address, port=target.port, username=target.user, pkey=pkey,
                allow_agent=pkey is None, look_for_keys=pkey is None, timeout=timeout_s,
                banner_timeout=timeout_s, auth_timeout=timeout_s, channel_timeout=timeout_s,
            )  # fmt: skip
        except paramiko.BadHostKeyException as exc:
            fingerprint = exc.key.fingerprint
            expected = exc.expected_key.fingerprint
            error = f"host key mismatch for {exc.hostname}: got {fingerprint}, {target.known_hosts} has {expected}"
            return _result(target, Outcome.HOST_KEY_MISMATCH, "changed", error, _host_key_hint(target, fingerprint),
                           started)  # fmt: skip
        except paramiko.AuthenticationException as exc:
            reason = "key-refused"
            error = f"Permission denied: {exc}"
            return _result(target, Outcome.AUTH_FAILED, reason, error, _auth_hint(target, reason), started)
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            inner = next(iter(exc.errors.values()), exc)
            reason = _socket_reason(inner)
            error = f"cannot connect to {target.address}:{target.port}: {getattr(inner, 'strerror', None) or inner}"
            return _result(target, Outcome.UNREACHABLE, reason, error, _unreachable_hint(target, reason, timeout_s),
                           started)  # fmt: skip
        except (paramiko.SSHException, EOFError) as exc:
            reason = "handshake"
            error = f"SSH handshake failed: {exc}"
            return _result(target, Outcome.UNREACHABLE, reason, error, _unreachable_hint(target, reason, timeout_s),
                           started)  # fmt: skip
        except OSError as exc:
            reason = _socket_reason(exc)
            error = f"cannot connect to {target.address}:{target.port}: {exc.strerror or exc}"
            return _result(target, Outcome.UNREACHABLE, reason, error, _unreachable_hint(target, reason, timeout_s),
                           started)  # fmt: skip
        check = _result(target, Outcome.OK, "", "", "", started)
        check.new_host_key = policy.accepted
        try:
            check.round_trips_ms = _echo_round_trips(client, max(1, round_trips), timeout_s)
            check.latency_ms = statistics.median(check.round_trips_ms)
            if command is not None:
                check.exit_status, check.output = _run(client, command, stdin, timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            check.outcome, check.reason = Outcome.UNREACHABLE, "handshake"
            check.error = f"connected, but the session failed: {exc}"
            check.hint = _unreachable_hint(target, "handshake", timeout_s)
        return check
    finally:
        client.close()


def check_hosts(targets: Sequence[SshTarget], *, timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> list[SshCheck]:
    """``check_ssh`` of every target in parallel (results in the targets' order)."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return list(pool.map(lambda t: check_ssh(t, timeout_s=timeout_s, **kwargs), targets))


def spec_targets(spec: ClusterSpec, base_dir: Path, names: Iterable[str] | None = None) -> list[SshTarget]:
    """The SSH targets of the spec's remote hosts (``names`` limits them; local hosts need no SSH)."""
    wanted = set(names) if names is not None else None
    return [
        SshTarget.from_spec(h, base_dir) for h in spec.hosts if not h.is_local and (wanted is None or h.name in wanted)
    ]


def describe(check: SshCheck) -> str:
    """One line: ``h3: unreachable (refused) after 2 ms: <hint>``."""
    if check.ok:
        return f"{check.host}: ok, latency {check.latency_ms or 0:.1f} ms"
    return f"{check.host}: {check.outcome} ({check.reason}): {check.error}; {check.hint}"


def table(checks: Sequence[SshCheck]) -> str:
    """The SSH preflight as a table: host, result, latency, hint."""
    width = max([len("host"), *(len(c.host) for c in checks)]) + 2
    result_width = max([len("result"), *(len(_result_text(c)) for c in checks)]) + 2
    lines = [f"{'host':<{width}}{'result':<{result_width}}{'latency':>10}  hint"]
    for c in checks:
        latency = f"{c.latency_ms:.1f} ms" if c.latency_ms is not None else "-"
        lines.append(f"{c.host:<{width}}{_result_text(c):<{result_width}}{latency:>10}  {c.hint or '-'}")
    return "\n".join(lines)


def _result_text(check: SshCheck) -> str:
    return str(check.outcome) if check.ok or not check.reason else f"{check.outcome} ({check.reason})"


def ssh_failures(
    spec: ClusterSpec, spec_file: Path, names: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, SshCheck]:
    """Why hosts could not be reached: the SSH check of the spec hosts ``names``, only those that are not ok.

    ``rbee plan`` and ``rbee deploy`` call it for the hosts pyinfra could not connect to, so the operator
    reads unreachable / auth-failed / host-key-mismatch and a hint instead of a bare connection error.
    """
    targets = spec_targets(spec, spec_file.resolve().parent, names)
    return {c.host: c for c in check_hosts(targets, timeout_s=timeout_s, round_trips=1) if not c.ok}
