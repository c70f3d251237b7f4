"""The hosts' root filesystem: per Debian release, a minbase built once with mmdebstrap, then customised
into ``base-<release>/``.

``base-<release>/`` is the read-only lower layer of the overlay of every host running that release, so
one tree serves all of them (each host only writes its own ~8 MB upper layer). Both steps are skipped
when their stamp (a hash of the release and the recipe, and for the base also of the test key) is unchanged.
The image carries ``g++`` and ``make``: the hosts have no internet, and a deploy may build the engine there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rbee.testhosts import naming, releases
from rbee.testhosts.paths import Paths
from rbee.testhosts.system import TestHostsError, run

VARIANT = "minbase"
INCLUDE = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iproute2", "iputils-ping", "procps",
    "ca-certificates", "python3", "python3-venv", "python3-pip", "curl", "sqlite3", "g++", "make",
)  # fmt: skip
# Bump when the base customisation below changes (the tarball's stamp covers release, VARIANT, INCLUDE).
BASE_RECIPE = 1
DEPLOY_USER = "deploy"

# Units that slow the boot or do background work nobody asked for in a test host.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer",
    "e2scrub_reap.service", "systemd-pstore.service", "getty@tty1.service", "console-getty.service",
    "systemd-networkd.service", "systemd-networkd.socket", "systemd-resolved.service",
    "systemd-timesyncd.service",
)  # fmt: skip

SSHD_CONFIG = """\
# rbee test host: key login only, fast, many parallel sessions (pyinfra opens several)
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
"""
# Per-host SSH host keys: generated at first boot in each host's overlay, never shared.
SSH_HOSTKEYS_DROPIN = """\
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""
STAMP_NAME = ".rbee-testhosts-stamp"

Log = Callable[[str], None]


def _digest(*parts: object) -> str:
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:16]


def tarball_stamp(release: str) -> str:
    """Identifies the mmdebstrap recipe of ``release``; a different value means the tarball must be rebuilt."""
    return _digest(release, VARIANT, ",".join(INCLUDE))


def ensure_key(paths: Paths) -> None:
    """Create the test SSH key pair once."""
    paths.ssh.mkdir(parents=True, exist_ok=True)
    if not paths.key.is_file() or not paths.public_key.is_file():
        paths.key.unlink(missing_ok=True)
        paths.public_key.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rbee-testhosts", "-f", str(paths.key)])


def write_ssh_config(paths: Paths) -> None:
    """``ssh -F ssh/config hN`` logs in as root with the test key; host keys are never checked or stored.

    The file serves the test hosts only, hence ``Host *`` for the common options.
    """
    lines = [
        "Host *",
        "  User root",
        f"  IdentityFile {paths.key}",
        "  IdentitiesOnly yes",
        "  BatchMode yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "  ConnectTimeout 5",
        "  ServerAliveInterval 5",
        "  ServerAliveCountMax 3",
    ]
    for i in range(1, naming.MAX_HOSTS + 1):
        name = naming.host_name(i)
        lines += [f"Host {name}", f"  HostName {naming.address(name)}"]
    paths.ssh_config.write_text("\n".join(lines) + "\n")


def ensure_tarball(paths: Paths, release: str, log: Log = print) -> Path:
    """Build ``cache/<release>-rootfs.tar`` with mmdebstrap unless it exists with the current recipe (~1-2 min)."""
    tar = paths.tarball(releases.check(release))
    stamp = tar.with_suffix(".stamp")
    if tar.is_file() and stamp.is_file() and stamp.read_text().strip() == tarball_stamp(release):
        return tar
    paths.cache.mkdir(parents=True, exist_ok=True)
    partial = tar.with_suffix(".partial.tar")  # mmdebstrap picks the format from the suffix
    log(f"building the {release} rootfs with mmdebstrap (1-2 minutes, once)")
    started = time.monotonic()
    command = [
        "mmdebstrap", "--quiet", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}",
        "--aptopt=Acquire::Retries \"3\"", release, str(partial),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise TestHostsError(f"mmdebstrap failed (exit {result.returncode}):\n{tail}")
    partial.replace(tar)
    stamp.write_text(tarball_stamp(release) + "\n")
    log(f"rootfs tarball ready: {tar} ({tar.stat().st_size // 2**20} MiB, {time.monotonic() - started:.0f}s)")
    return tar


def base_stamp(paths: Paths, release: str) -> str:
    """Identifies ``base-<release>/``: the tarball recipe, the customisation and the test key."""
    return _digest(tarball_stamp(release), BASE_RECIPE, paths.public_key.read_text().strip())


def base_is_current(paths: Paths, release: str) -> bool:
    stamp = paths.base(release) / STAMP_NAME
    return paths.public_key.is_file() and stamp.is_file() and stamp.read_text().strip() == base_stamp(paths, release)


def _owner_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise TestHostsError(f"user {user} missing from {root}/etc/passwd")


def _install_key(root: Path, home: str, public_key: str, uid: int, gid: int) -> None:
    ssh_dir = root / home.lstrip("/") / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_key)
    keys.chmod(0o600)
    for path in (ssh_dir, keys):
        os.chown(path, uid, gid)


def customise(root: Path, paths: Paths) -> None:
    """Turn an extracted rootfs into a test-host base (see the module docstring of ``hosts``)."""
    etc = root / "etc"
    # 1. SSH: per-host host keys at first boot, key-only login for root and a sudo user
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    dropin = etc / "systemd/system/ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "10-rbee-hostkeys.conf").write_text(SSH_HOSTKEYS_DROPIN)
    (etc / "ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (etc / "ssh/sshd_config.d/10-rbee-test.conf").write_text(SSHD_CONFIG)
    public_key = paths.public_key.read_text()
    _install_key(root, "/root", public_key, 0, 0)
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", DEPLOY_USER])
    uid, gid = _owner_ids(root, DEPLOY_USER)
    _install_key(root, f"/home/{DEPLOY_USER}", public_key, uid, gid)
    sudoers = etc / f"sudoers.d/{DEPLOY_USER}"
    sudoers.write_text(f"{DEPLOY_USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    # 2. A fast, quiet boot
    for unit in MASKED_UNITS:
        link = etc / "systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # 3. Identity: a fresh transient machine-id per boot, the hostname comes from each host's overlay
    (etc / "machine-id").write_text("")
    (etc / "hostname").unlink(missing_ok=True)
    hosts = [f"{naming.address(n)} {n}" for n in naming.names(naming.MAX_HOSTS)]
    with (etc / "hosts").open("a") as handle:
        handle.write("\n".join(["# rbee test hosts", *hosts]) + "\n")
    # 4. No DNS traffic may leave: mmdebstrap copied the build machine's resolv.conf (a private resolver)
    resolv = etc / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("nameserver 127.0.0.1\n")


def ensure_base(paths: Paths, release: str, log: Log = print) -> Path:
    """Make ``base-<release>/`` current (~5 s from the cached tarball); build the tarball first when needed."""
    ensure_key(paths)
    write_ssh_config(paths)
    tar = ensure_tarball(paths, release, log)
    base = paths.base(release)
    if base_is_current(paths, release):
        return base
    log(f"preparing {base} from {tar.name}")
    fresh = base.with_name(base.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    run(["tar", "-C", str(fresh), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tar)], timeout=300)
    customise(fresh, paths)
    (fresh / STAMP_NAME).write_text(base_stamp(paths, release) + "\n")
    shutil.rmtree(base, ignore_errors=True)
    fresh.replace(base)
    return base
