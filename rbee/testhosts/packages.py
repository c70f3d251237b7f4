"""The Debian packages the test hosts need on the machine running them (installed once, with apt)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

HOST_PACKAGES = ("systemd-container", "mmdebstrap", "openssh-client", "nftables")
# Commands used besides those packages' own (iproute2, util-linux, tar are in every Debian install).
BASE_COMMANDS = ("ip", "mount", "umount", "tar", "chroot")


class PackagesError(Exception):
    """The host packages are missing and could not be installed."""


def is_installed(package: str) -> bool:
    """True when dpkg reports ``package`` as installed."""
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and result.stdout.strip() == "installed"


def missing_packages() -> list[str]:
    """The packages of ``HOST_PACKAGES`` not installed yet."""
    return [p for p in HOST_PACKAGES if not is_installed(p)]


def ensure_packages(log: Callable[[str], None] = print) -> list[str]:
    """Install the missing host packages with apt-get (root only); return what was installed."""
    missing = missing_packages()
    if missing:
        if os.geteuid() != 0:
            raise PackagesError(f"packages {' '.join(missing)} are missing and only root can install them")
        if shutil.which("apt-get") is None:
            raise PackagesError(f"packages {' '.join(missing)} are missing and there is no apt-get here")
        log(f"installing {' '.join(missing)} (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        for command in (["apt-get", "update", "-q"], install):
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                raise PackagesError(f"{' '.join(command)} failed (exit {result.returncode}):\n{tail}")
    absent = [c for c in BASE_COMMANDS if shutil.which(c) is None]
    if absent:
        raise PackagesError(f"commands not found: {' '.join(absent)} (install iproute2, util-linux, tar)")
    return missing
