"""A large file sent to a host by its own OpenSSH process: ``ssh HOST python3 -c RECEIVER ARGS < FILE``.

pyinfra moves every host's files through its one paramiko process (about one core for all hosts together);
here each host's copy is an ``ssh`` child of its own, so the hosts' copies run in parallel, as ``scp`` to each
would (pyinfra runs hosts as gevent greenlets and its CLI patches ``subprocess``: waiting on one child lets the
others run). The host side (``rbee.deploys.receive_upload``) continues the content-named temp file, hashes while it
writes, then fsyncs, renames and stamps: the whole upload is this one remote call.

``ssh_command`` uses the connection settings pyinfra uses for that host (address, port, user, key, ssh config,
known_hosts file and host key checking, never weakened); a host it cannot reach that way (password or
passphrase logins, a sudo password, su or doas, another connector, no ``ssh`` here) gets ``None``, and the
caller uploads through pyinfra instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra import logger
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.connectors.ssh import SSHConnector

from rbee.deploys import receive_upload

RECEIVER = Path(receive_upload.__file__).read_text()
"""The receiver's source, run on the host with ``python3 -c`` (nothing is installed there)."""

ALIVE = ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
"""A link that stops answering fails the copy within a minute (its bytes are kept and continued next time)."""


def ssh_command(host: Host) -> list[str] | None:
    """``ssh OPTIONS -- DESTINATION`` with pyinfra's settings for ``host``; None: upload through pyinfra instead."""
    connector = getattr(host, "connector", None)
    if not isinstance(connector, SSHConnector) or shutil.which("ssh") is None:
        return None
    data: Any = connector.data
    if data["ssh_password"] or data["ssh_key_password"] or data["ssh_paramiko_connect_kwargs"]:
        return None  # OpenSSH in batch mode cannot answer a prompt
    if any(host.data.get(k) for k in ("_sudo_password", "_su_user", "_doas")):
        return None
    if host.connector_data.get("prompted_sudo_password"):
        return None
    args = ["ssh", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *ALIVE]  # errors only: no "Permanently added"
    args += ["-o", f"ConnectTimeout={host.state.config.CONNECT_TIMEOUT}"]
    if data["ssh_config_file"]:
        args += ["-F", str(Path(data["ssh_config_file"]).expanduser())]
    if data["ssh_known_hosts_file"]:
        args += ["-o", f"UserKnownHostsFile={Path(data['ssh_known_hosts_file']).expanduser()}"]
    if data["ssh_strict_host_key_checking"]:
        args += ["-o", f"StrictHostKeyChecking={data['ssh_strict_host_key_checking']}"]
    if data["ssh_port"]:
        args += ["-p", str(int(data["ssh_port"]))]
    if data["ssh_user"]:
        args += ["-l", str(data["ssh_user"])]
    if data["ssh_key"]:  # pyinfra then offers that key only
        args += ["-i", str(Path(data["ssh_key"]).expanduser()), "-o", "IdentitiesOnly=yes"]
    return [*args, "--", str(data["ssh_hostname"] or host.name)]


@dataclass(frozen=True)
class Upload:
    """One streamed upload: ``src`` from byte ``offset`` into ``temp``, checked against ``sha256``, renamed to ``dest``.

    ``mode`` (octal digits), ``owner`` (``user:group``) and ``stamp`` (the upload stamp's path): ``""`` for none.
    """

    src: str
    temp: str
    dest: str
    sha256: str
    offset: int = 0
    mode: str = ""
    owner: str = ""
    stamp: str = ""

    def remote_command(self, sudo: bool = False, sudo_user: str | None = None) -> str:
        """The receiver's command line on the host (under ``sudo -n`` when the host's commands use sudo)."""
        size = Path(self.src).stat().st_size
        args = [self.temp, self.dest, self.sha256, str(size), str(self.offset), self.mode, self.owner, self.stamp]
        prefix = ["sudo", "-H", "-n", *(["-u", sudo_user] if sudo_user else []), "--"] if sudo else []
        return shlex.join([*prefix, "python3", "-c", RECEIVER, *args])


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux: the ssh child gets SIGTERM when the deploy dies (a killed deploy leaves no copy running)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_death_signal


def send(ssh: list[str], upload: Upload, sudo: bool = False, sudo_user: str | None = None) -> str | None:
    """Run the upload through ``ssh`` (``ssh_command``'s); None when it is in place, else why not."""
    with Path(upload.src).open("rb") as data:
        data.seek(upload.offset)
        proc = subprocess.Popen(
            [*ssh, upload.remote_command(sudo, sudo_user)], stdin=data, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=_die_with_parent(),
        )  # fmt: skip
        try:
            _out, err = proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait()
    if proc.returncode == 0:
        return None
    said = err.decode(errors="replace").replace(f"rbee: {upload.dest}: ", "")  # the caller names the file
    return "; ".join(line.strip() for line in said.splitlines() if line.strip()) + f" (ssh exit {proc.returncode})"


class StreamUpload(PyinfraCommand):
    """A pyinfra command that runs ``send`` for the current host (see the module docstring)."""

    def __init__(self, upload: Upload) -> None:
        super().__init__()
        self.upload = upload

    def __repr__(self) -> str:
        u = self.upload
        return f"StreamUpload({u.src} -> {u.temp} from byte {u.offset}, then {u.dest})"

    def execute(self, state: State, host: Host, connector_arguments: Any) -> bool:
        ssh = ssh_command(host)
        failure = "this host's SSH settings need pyinfra's own connection" if ssh is None else None
        if ssh is not None:
            failure = send(ssh, self.upload, bool(connector_arguments.get("_sudo")),
                           connector_arguments.get("_sudo_user") or None)  # fmt: skip
        if failure is None:
            return True
        host.log_styled(
            f"rbee: copy of {self.upload.src} to {host.name}:{self.upload.dest} failed: {failure}",
            fg="red", log_func=logger.error,
        )  # fmt: skip
        return False
