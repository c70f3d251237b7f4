"""Where the test hosts live: one work folder outside the repository.

``$RBEE_TESTHOSTS_DIR`` (default ``~/.cache/rbee/testhosts``) holds::

    lock               serialises up/down between processes
    session.lock       held by a pytest session for as long as it uses the hosts
    cache/             one mmdebstrap rootfs tarball per Debian release (+ its recipe stamp)
    base-<release>/    the prepared rootfs of a release, lower layer of the overlay of each host running it
    hosts/hN/          upper/ work/ root/ (the overlay), release, nspawn.pid, nspawn.log
    ssh/               id_ed25519(.pub): the test key; config: ssh client config for h1..hN
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DIR = "RBEE_TESTHOSTS_DIR"
DEFAULT_DIR = Path("~/.cache/rbee/testhosts")


@dataclass(frozen=True)
class Paths:
    """The files and folders of one test-hosts work folder."""

    root: Path

    @classmethod
    def default(cls) -> Paths:
        """``$RBEE_TESTHOSTS_DIR``, else ``~/.cache/rbee/testhosts`` (absolute)."""
        return cls(Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser().resolve())

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def base(self, release: str) -> Path:
        """``base-<release>``: the customised rootfs of one Debian release."""
        return self.root / f"base-{release}"

    @property
    def legacy_base(self) -> Path:
        """``base/``: the single bookworm base of harness versions before releases (removed once unused)."""
        return self.root / "base"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def key(self) -> Path:
        """Private half of the test key (root and ``deploy`` accept it on every host)."""
        return self.ssh / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.ssh / "id_ed25519.pub"

    @property
    def ssh_config(self) -> Path:
        """``ssh -F`` file: ``ssh -F <it> h1`` reaches h1 as root, host keys ignored."""
        return self.ssh / "config"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def session_lock(self) -> Path:
        return self.root / "session.lock"

    def tarball(self, suite: str) -> Path:
        return self.cache / f"{suite}-rootfs.tar"

    def host(self, name: str) -> Path:
        """``hosts/<name>``: the host's overlay layers, mount point, pid file and console log."""
        return self.hosts / name

    def release_file(self, name: str) -> Path:
        """``hosts/<name>/release``: the Debian release the host was made with."""
        return self.host(name) / "release"
