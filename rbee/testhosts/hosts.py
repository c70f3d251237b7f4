"""``TestHosts``: boot, break and destroy real SSH + systemd hosts on this machine (root only).

Over 400 lines on purpose: one class owns a host's whole life (boot, each failure injection, teardown)
so that every path of ``down()`` sees the same state; the pure parts live in its siblings.

Each host ``hN`` is a ``systemd-nspawn --boot`` container:

* its root is an overlay (``base-<release>/`` read-only below, ``hosts/hN/upper`` above): ~0 s and ~8 MB
  per host, and the disk survives stop/kill/start like a real machine's;
* it runs one Debian release (bookworm, trixie), recorded in ``hosts/hN/release`` while the host exists:
  ``up(n, releases=[...])`` recreates (fresh disk) a host whose recorded release differs, ``up(n)`` keeps
  each existing host's release and makes new ones bookworm; ``start``/``restore`` boot a host's own release;
* its network is its own namespace ``rbee-hN`` with one veth cable (``rbee-vN`` on the machine's side)
  plugged into the bridge ``rbee-br0``: address 10.210.0.(10+N)/24, no default route, DNS 127.0.0.1,
  so nothing from a host can leave the bridge (ip_forward is never touched);
* it runs in its own cgroup ``rbee-testhosts/hN`` (without it, every container's systemd manages the
  same cgroup tree and ~1 boot in 5 ends ``degraded`` with 219/CGROUP errors);
* PID 1 of this machine is not systemd, so nspawn runs with ``--register=no --keep-unit`` and there is
  no machinectl: hosts are found through ``hosts/hN/nspawn.pid`` (the container's init is its child).

Failure injection: ``stop`` (clean poweroff), ``kill`` (crash), ``start`` (boot again, same disk) give
"connection refused" while down; ``cable(name, False)`` and ``partition(a, b)`` give timeouts;
``pause`` freezes every process of a host (TCP connects, nothing answers). No latency/loss
injection: this kernel has no netem.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rbee.testhosts import naming, releases
from rbee.testhosts.packages import ensure_packages
from rbee.testhosts.paths import Paths
from rbee.testhosts.releases import assign as assign_releases
from rbee.testhosts.rootfs import base_is_current, ensure_base
from rbee.testhosts.system import (
    TestHostsError,
    all_pids,
    cgroup_roots,
    children,
    cmdline,
    file_lock,
    is_alive,
    is_mount_point,
    remove_cgroup_tree,
    run,
    signal_pid,
    unmount_under,
    wait_gone,
)

Log = Callable[[str], None]

READY_STATES = ("running", "degraded")
LOCK_TIMEOUT = 600.0
# Runs as the future nspawn process: join the host's own cgroups, then become systemd-nspawn.
_ENTER_CGROUPS = 'for c in $RBEE_TESTHOST_CGROUPS; do echo $$ > "$c/cgroup.procs" || exit 97; done; exec "$@"'


@dataclass(frozen=True)
class HostStatus:
    """One line of ``TestHosts.status()``."""

    name: str
    address: str
    running: bool
    ssh_ok: bool | None  # None: not checked (the host is not running)
    release: str = releases.DEFAULT


def require_root() -> None:
    """Test hosts need root (mounts, network namespaces, cgroups)."""
    if os.geteuid() != 0:
        raise TestHostsError("test hosts need root (mounts, network namespaces, cgroups); run as root")


def _quiet(_message: str) -> None:
    pass


class TestHosts:
    """The test hosts of one work folder (``Paths``); every method is safe to call again."""

    __test__ = False  # not a pytest test class

    def __init__(self, paths: Paths | None = None, *, log: Log | None = None, unified_cgroup: bool = True) -> None:
        self.paths = paths or Paths.default()
        self.log: Log = log or _quiet
        self.unified_cgroup = unified_cgroup  # False: the containers see this machine's hybrid cgroup layout
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ lookups

    @staticmethod
    def address(name: str) -> str:
        """``h2`` → ``10.210.0.12``."""
        return naming.address(name)

    def names(self) -> list[str]:
        """Hosts that exist (running or stopped), in order."""
        if not self.paths.hosts.is_dir():
            return []
        found = []
        for entry in self.paths.hosts.iterdir():
            with contextlib.suppress(naming.UnknownHostError):
                found.append((naming.index(entry.name), entry.name))
        return [name for _, name in sorted(found)]

    def nspawn_pid(self, name: str) -> int | None:
        """PID of the host's systemd-nspawn process while it runs."""
        try:
            pid = int((self.paths.host(name) / "nspawn.pid").read_text())
        except (OSError, ValueError):
            return None
        args = cmdline(pid)  # the launcher shell until it execs nspawn: both carry nspawn's arguments
        if is_alive(pid) and f"--machine={name}" in args and any(a.endswith("systemd-nspawn") for a in args):
            return pid
        return None

    def init_pid(self, name: str) -> int | None:
        """Machine-side PID of the host's init (systemd), the nspawn process's child."""
        pid = self.nspawn_pid(name)
        kids = children(pid) if pid is not None else []
        return kids[0] if kids else None

    def is_running(self, name: str) -> bool:
        return self.nspawn_pid(name) is not None

    def status(self, *, check_ssh: bool = True) -> list[HostStatus]:
        """Every existing host: address, running or not, and whether SSH answers (checked in parallel)."""
        names = self.names()
        running = {n: self.is_running(n) for n in names}

        def ssh_ok(name: str) -> bool | None:
            if not (check_ssh and running[name]):
                return None
            return self.ssh(name, "true", timeout=10, connect_timeout=2).returncode == 0

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            answers = list(pool.map(ssh_ok, names))
        return [
            HostStatus(n, naming.address(n), running[n], ok, self.release(n))
            for n, ok in zip(names, answers, strict=True)
        ]

    def release(self, name: str) -> str:
        """The Debian release of host ``name`` (bookworm for a host that does not exist yet)."""
        return releases.recorded(self.paths, name)

    # ------------------------------------------------------------------ lifecycle

    def up(self, count: int = 3, *, releases: Sequence[str] = (), timeout: float = 120.0) -> dict[str, str]:
        """Boot h1..h<count> (running hosts are left alone); return each host's systemd state.

        ``releases`` go to h1, h2, ... in order, the last one repeating (``("bookworm", "trixie")``: h1
        bookworm, the rest trixie); a host that exists with another release is recreated with a fresh disk.
        Without ``releases`` existing hosts keep theirs and new hosts run bookworm.
        """
        names = naming.names(count)
        wanted = assign_releases(names, releases) if releases else {}
        return self._bring_up(names, timeout, wanted)

    def start(self, name: str, *, timeout: float = 60.0) -> str:
        """Boot one host again with the disk it had (after ``stop``/``kill``); return its systemd state."""
        return self._bring_up([name], timeout)[name]

    def stop(self, name: str, *, timeout: float = 20.0) -> None:
        """Clean poweroff (nspawn turns SIGTERM into a systemd shutdown); its address then refuses connections."""
        naming.index(name)
        with self._lock("stop"):
            pid = self.nspawn_pid(name)
            if pid is None:
                return
            signal_pid(pid, signal.SIGTERM)
            if not wait_gone(pid, timeout):
                self.log(f"{name} did not power off within {timeout:.0f}s; killing it")
                self._force_kill(name, pid)

    def remove(self, name: str) -> None:
        """Destroy one host: power it off, then delete its disk, network namespace and cgroups."""
        naming.index(name)
        with self._lock("remove"):
            self._remove(name)

    def kill(self, name: str) -> None:
        """Crash the host: SIGKILL its init (every process of the host dies); connections are then refused."""
        naming.index(name)
        with self._lock("kill"):
            pid = self.nspawn_pid(name)
            if pid is not None:
                self._force_kill(name, pid)

    def down(self, *, purge: bool = False) -> None:
        """Destroy every host and everything made for them, including strays of an aborted run.

        ``purge``: also delete the cached rootfs, the base and the test key (the next ``up`` rebuilds them).
        """
        with self._lock("down"):
            self._down()
        if purge:
            shutil.rmtree(self.paths.root, ignore_errors=True)

    def restore(self) -> dict[str, str]:
        """Undo every injected failure: heal partitions, plug cables, thaw, boot stopped hosts."""
        if shutil.which("nft") is not None:
            run(["nft", "delete", "table", "bridge", naming.NFT_TABLE], check=False)
        names = self.names()
        for name in names:
            if self.is_running(name):
                self.resume(name)
            with contextlib.suppress(TestHostsError):
                self.cable(name, True)
        return self._bring_up(names, 60.0) if names else {}

    def wait_ready(self, names: Sequence[str], timeout: float = 60.0) -> dict[str, str]:
        """Wait (in parallel) until each host answers SSH and systemd finished booting; return the states.

        The state is ``running`` or ``degraded`` (booted, but a unit failed: see ``systemctl --failed``).
        """
        deadline = time.monotonic() + timeout

        def wait_one(name: str) -> str:
            while True:
                if not self.is_running(name):
                    raise TestHostsError(f"{name} is not running{self._log_tail(name)}")
                left = deadline - time.monotonic()
                if left <= 0:
                    where = f"{name} ({naming.address(name)})"
                    raise TestHostsError(f"{where} did not boot within {timeout:.0f}s{self._log_tail(name)}")
                answer = self.ssh(name, "systemctl is-system-running --wait", timeout=left, connect_timeout=1)
                state = answer.stdout.strip()
                if state in READY_STATES:
                    return state
                time.sleep(0.2)

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            states = dict(zip(names, pool.map(wait_one, names), strict=True))
        for name, state in states.items():
            if state != "running":
                self.log(f"{name} booted {state}: see `systemctl --failed` on it")
        return states

    # ------------------------------------------------------------------ failure injection

    def cable(self, name: str, up: bool) -> None:
        """Plug (True) or pull (False) the host's network cable: while pulled, its packets are dropped (timeouts)."""
        link = naming.veth(name)
        run(["ip", "link", "set", link, "up" if up else "down"])

    def partition(self, a: str, b: str) -> None:
        """Drop every packet between ``a`` and ``b`` (both ways, timeouts); others still reach both."""
        self._nft(a, b, cut=True)

    def heal(self, a: str, b: str) -> None:
        """Undo ``partition(a, b)``."""
        self._nft(a, b, cut=False)

    def pause(self, name: str) -> None:
        """Freeze every process of the host (a hung machine: TCP connects, nothing answers)."""
        self._freeze(name, True)

    def resume(self, name: str) -> None:
        """Thaw a paused host."""
        self._freeze(name, False)

    # ------------------------------------------------------------------ access

    def ssh(
        self,
        name: str,
        command: str | Sequence[str],
        *,
        user: str = "root",
        timeout: float | None = 60.0,
        connect_timeout: int | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the host over SSH (the generated ssh config); a timeout gives exit status 124."""
        naming.index(name)  # an unknown name would make ssh ask the machine's DNS
        remote = command if isinstance(command, str) else shlex.join(command)
        args = ["ssh", "-F", str(self.paths.ssh_config), "-l", user]
        if connect_timeout is not None:
            args += ["-o", f"ConnectTimeout={max(1, connect_timeout)}"]
        args += [name, remote]
        try:
            result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return subprocess.CompletedProcess(args, 124, out, f"ssh {name}: timed out after {timeout}s\n")
        if check and result.returncode != 0:
            raise TestHostsError(f"ssh {name} {remote!r} failed (exit {result.returncode}): {result.stderr.strip()}")
        return result

    @contextlib.contextmanager
    def session_lease(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the hosts for a whole test session: a second session waits until the first is done."""
        with file_lock(self.paths.session_lock, timeout, "test hosts session"):
            yield

    # ------------------------------------------------------------------ internals

    def _lock(self, what: str) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.paths.lock, LOCK_TIMEOUT, f"test hosts {what}")

    def _bring_up(self, names: list[str], timeout: float, wanted: dict[str, str] | None = None) -> dict[str, str]:
        """Boot ``names`` (each with ``wanted[name]``, else its recorded release) and wait until they are up."""
        for name in names:
            naming.index(name)
        require_root()
        with self._lock("up"):
            ensure_packages(self.log)
            for name, release in (wanted or {}).items():
                if self.paths.host(name).is_dir() and self.release(name) != release:
                    self.log(f"{name}: {self.release(name)} -> {release}, recreating it with a fresh disk")
                    self._remove(name)
            plan = {name: (wanted or {}).get(name) or self.release(name) for name in names}
            self._ensure_bases(sorted(set(plan.values())))
            self._ensure_bridge()
            for name in names:
                if not self.is_running(name):
                    self._boot(name, plan[name])
        try:
            return self.wait_ready(names, timeout)
        except TestHostsError as exc:
            # A container's init now and then exits during its first seconds (seen ~1 boot in 100 here):
            # such a host gets one more boot, said in the log; a host that dies again fails the call.
            died = [name for name in names if not self.is_running(name)]
            if not died:
                raise
            self.log(f"{', '.join(died)} stopped while booting; booting again once ({exc})")
            with self._lock("up"):
                for name in died:
                    self._boot(name, plan[name])
            return self.wait_ready(names, timeout)

    def _ensure_bases(self, needed: list[str]) -> None:
        """Make the base of each needed release current; one still used by a host is never rebuilt under it."""
        existing = self.names()
        for release in needed:
            users = [name for name in existing if self.release(name) == release]
            if users and not base_is_current(self.paths, release):
                raise TestHostsError(
                    f"the {release} base rootfs in {self.paths.base(release)} is out of date but still used by "
                    f"{', '.join(users)}; run down() first"
                )
            ensure_base(self.paths, release, self.log)
        if not existing:  # the single base of older harness versions, now unused
            shutil.rmtree(self.paths.legacy_base, ignore_errors=True)

    def _ensure_bridge(self) -> None:
        if run(["ip", "link", "show", naming.BRIDGE], check=False).returncode == 0:
            return
        taken = run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines()
        clash = [line.split()[1] for line in taken if f" {naming.SUBNET}." in line]
        if clash:
            raise TestHostsError(f"{naming.SUBNET}.0/24 is already used by {', '.join(clash)} (another harness?)")
        run(["ip", "link", "add", naming.BRIDGE, "address", naming.BRIDGE_MAC, "type", "bridge"])
        run(["ip", "addr", "add", f"{naming.BRIDGE_ADDRESS}/{naming.PREFIX_LEN}", "dev", naming.BRIDGE])
        run(["ip", "link", "set", naming.BRIDGE, "up"])

    def _ensure_netns(self, name: str) -> None:
        ns = naming.netns(name)
        if Path(f"/run/netns/{ns}").exists():
            if run(["ip", "-n", ns, "link", "show", "eth0"], check=False).returncode == 0:
                return
            run(["ip", "netns", "del", ns], check=False)  # half-made by an aborted run
        link = naming.veth(name)
        run(["ip", "link", "del", link], check=False)
        run(["ip", "netns", "add", ns])
        run([
            "ip", "link", "add", link, "address", naming.mac(name, machine_side=True), "type", "veth",
            "peer", "name", "eth0", "address", naming.mac(name), "netns", ns,
        ])  # fmt: skip
        run(["ip", "link", "set", link, "master", naming.BRIDGE, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{naming.address(name)}/{naming.PREFIX_LEN}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _host_cgroups(self, name: str) -> list[Path]:
        return [root / naming.CGROUP_DIR / name for root in cgroup_roots()]

    def _boot(self, name: str, release: str) -> None:
        folder = self.paths.host(name)
        root = folder / "root"
        for sub in ("upper", "work", "root"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        releases.record(self.paths, name, release)
        self._ensure_netns(name)
        if not is_mount_point(root):
            layers = f"lowerdir={self.paths.base(release)},upperdir={folder / 'upper'},workdir={folder / 'work'}"
            run(["mount", "-t", "overlay", "overlay", "-o", layers, str(root)])
        (root / "etc/hostname").write_text(f"{name}\n")
        cgroups = self._host_cgroups(name)
        for cgroup in cgroups:
            remove_cgroup_tree(cgroup)  # stale sub-cgroups of a killed boot
            cgroup.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RBEE_TESTHOST_CGROUPS": " ".join(map(str, cgroups))}
        if self.unified_cgroup:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        command = [
            "sh", "-c", _ENTER_CGROUPS, "rbee-testhost",
            "systemd-nspawn", "--quiet", "--boot", f"--directory={root}", f"--machine={name}", f"--hostname={name}",
            "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{naming.netns(name)}",
            "--resolv-conf=off", "--timezone=off", "--console=passive",
        ]  # fmt: skip
        with (folder / "nspawn.log").open("ab") as console:
            # own session: a Ctrl-C in the terminal reaches the harness (which cleans up), never the hosts
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        (folder / "nspawn.pid").write_text(f"{process.pid}\n")
        self._children[name] = process
        self.log(f"{name}: booting {release} ({naming.address(name)}, nspawn pid {process.pid})")

    def _remove(self, name: str) -> None:
        pid = self.nspawn_pid(name)
        if pid is not None:
            signal_pid(pid, signal.SIGTERM)
            if not wait_gone(pid, 10.0):
                self.log(f"{name} did not power off within 10s; killing it")
                self._force_kill(name, pid)
        self._children.pop(name, None)
        unmount_under(self.paths.host(name))
        run(["ip", "netns", "del", naming.netns(name)], check=False)  # also removes its veth pair
        run(["ip", "link", "del", naming.veth(name)], check=False)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)
        for cgroup in self._host_cgroups(name):
            remove_cgroup_tree(cgroup)
        shutil.rmtree(self.paths.host(name), ignore_errors=True)

    def _force_kill(self, name: str, pid: int) -> None:
        """SIGKILL the host's init (its whole PID namespace dies), then nspawn if it lingers."""
        for child in children(pid):
            signal_pid(child, signal.SIGKILL)
        if not wait_gone(pid, 10.0):
            signal_pid(pid, signal.SIGKILL)
            wait_gone(pid, 5.0)
        if (process := self._children.pop(name, None)) is not None:
            process.poll()

    def _stray_nspawns(self) -> list[int]:
        """nspawn processes of test hosts whose pid file is gone (an aborted run, a deleted work folder)."""
        marker = f"--network-namespace-path=/run/netns/{naming.NETNS_PREFIX}h"
        return [pid for pid in all_pids() if is_alive(pid) and any(a.startswith(marker) for a in cmdline(pid))]

    def _down(self) -> None:
        names = self.names()
        running = {n: pid for n in names if (pid := self.nspawn_pid(n)) is not None}
        strays = [pid for pid in self._stray_nspawns() if pid not in running.values()]
        for pid in [*running.values(), *strays]:
            signal_pid(pid, signal.SIGTERM)  # all hosts power off at once
        for name, pid in [*running.items(), *((f"stray {p}", p) for p in strays)]:
            if not wait_gone(pid, 10.0):
                self.log(f"{name} did not power off within 10s; killing it")
                self._force_kill(name, pid)
        self._children.clear()
        unmount_under(self.paths.hosts)
        for ns in run(["ip", "netns", "list"]).stdout.split():
            if ns.startswith(f"{naming.NETNS_PREFIX}h"):
                run(["ip", "netns", "del", ns], check=False)  # also removes its veth pair
        for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
            link = line.split(":")[1].strip().split("@")[0]
            if link.startswith(naming.VETH_PREFIX):
                run(["ip", "link", "del", link], check=False)
        run(["ip", "link", "del", naming.BRIDGE], check=False)
        if shutil.which("nft") is not None:
            run(["nft", "delete", "table", "bridge", naming.NFT_TABLE], check=False)
        for name in names:
            shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)
            for cgroup in self._host_cgroups(name):
                remove_cgroup_tree(cgroup)
        for root in cgroup_roots():
            remove_cgroup_tree(root / naming.CGROUP_DIR)
        shutil.rmtree(self.paths.hosts, ignore_errors=True)
        netns_dir = Path("/run/netns")
        # `ip netns add` bind-mounts /run/netns onto itself; drop it once no namespace is left
        if netns_dir.is_dir() and not any(netns_dir.iterdir()):
            if is_mount_point(netns_dir):
                run(["umount", str(netns_dir)], check=False)
            with contextlib.suppress(OSError):
                netns_dir.rmdir()

    def _nft(self, a: str, b: str, *, cut: bool) -> None:
        if shutil.which("nft") is None:
            raise TestHostsError("nft not found: install nftables (partitions drop frames on the bridge with it)")
        first, second = sorted((a, b), key=naming.index)
        chain = f"cut_{first}_{second}"  # note: `fwd`/`forward` are nft keywords, not chain names
        table = f"bridge {naming.NFT_TABLE}"
        # one transaction; "add" of what exists is a no-op, so both directions are idempotent
        script = [
            f"add table {table}",
            f"add chain {table} {chain} {{ type filter hook forward priority 0; }}",
            f"flush chain {table} {chain}",
        ]
        if cut:
            one, two = naming.address(first), naming.address(second)
            script.append(f"add rule {table} {chain} ip saddr {one} ip daddr {two} drop")
            script.append(f"add rule {table} {chain} ip saddr {two} ip daddr {one} drop")
        else:
            script.append(f"delete chain {table} {chain}")
        result = subprocess.run(
            ["nft", "-f", "-"], input="\n".join(script) + "\n", capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise TestHostsError(f"nft failed: {result.stderr.strip()}")

    def _freeze(self, name: str, frozen: bool) -> None:
        naming.index(name)
        for root in cgroup_roots():
            control = root / naming.CGROUP_DIR / name / "payload" / "cgroup.freeze"
            if control.is_file():
                control.write_text("1" if frozen else "0")
                return
        init = self.init_pid(name)  # no cgroup2 freezer: stop every process of the host's PID namespace
        if init is None:
            raise TestHostsError(f"{name} is not running")
        namespace = Path(f"/proc/{init}/ns/pid").readlink()
        for pid in all_pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/ns/pid").readlink() == namespace:
                    signal_pid(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def _log_tail(self, name: str, lines: int = 15) -> str:
        log = self.paths.host(name) / "nspawn.log"
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; last lines of {log}:\n" + "\n".join(tail) if tail else ""
