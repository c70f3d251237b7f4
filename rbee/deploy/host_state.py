"""What rbee finds on a host, read in one shell round trip: ``state_script`` prints it, ``parse_state`` reads it.

The script runs in the preflight's round trip, after the probe (``rbee.deploy.probe``). It prints one line
per thing a deploy compares: sha256, mode and owner of the small managed files (configs, units,
credentials, plists, ``release.json``); mode, owner and size/mtime/inode of folders and large files
(models, engine wheels; never hashed); the stamps (what a step last installed, what a service last
started from, each verified upload); a listing digest of the wheelhouse; the service account; the
systemd units (or launchd jobs) of rbee; temp files an interrupted upload left. ``rbee.deploy.host_diff``
compares it with what the plan wants. Plain POSIX sh: Linux (GNU stat) and macOS (BSD stat).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field

from rbee.deploy.layout import (
    CONFIG_DIR,
    CREDENTIALS_DIR,
    DATA_DIR,
    LAUNCH_DAEMONS_DIR,
    MACOS_DATA_DIR,
    MACOS_LOG_DIR,
    OLD_API_KEYS_FILE,
    WORKERS_DIR,
    HostLayout,
)
from rbee.deploy.releases import TEMP_MARK, UNITS

UPLOAD_STAMP_PREFIX = "upload-"
"""Stamp files named ``upload-<key>`` record a verified upload: ``<path> <sha256> <size> <mtime> <inode>``."""

WHEELHOUSE_STAMP = "wheelhouse"
"""The stamp of a synced wheelhouse: ``<fingerprint> <listing digest>``."""

STAT = "stat -c '%a %U %G %s %Y %i' \"$@\" 2>/dev/null || stat -f '%Lp %Su %Sg %z %m %i' \"$@\" 2>/dev/null"
"""Mode, owner, group, size, mtime and inode of each argument (GNU or BSD stat)."""

SHA256 = 'sha256sum "$@" 2>/dev/null || shasum -a 256 "$@" 2>/dev/null'

STATS = (
    "if stat -c %a / >/dev/null 2>&1; then\n"
    '  rbee_stats() { k=$1; shift; stat -c "$k%a %U %G %s %Y %i %n" "$@" 2>/dev/null; }\n'
    "  rbee_named() { stat -c '%n %a %U %G %s %Y %i' \"$@\" 2>/dev/null; }\n"
    "else\n"
    '  rbee_stats() { k=$1; shift; stat -f "$k%Lp %Su %Sg %z %m %i %N" "$@" 2>/dev/null; }\n'
    "  rbee_named() { stat -f '%N %Lp %Su %Sg %z %m %i' \"$@\" 2>/dev/null; }\n"
    "fi\n"
)
"""Many paths in one ``stat`` (GNU or BSD, chosen once): ``rbee_stats PREFIX PATH...`` prints ``PREFIX`` then
``rbee_stat``'s fields then the path; ``rbee_named PATH...`` the path then the fields (the wheelhouse listing)."""

FUNCTIONS = f"rbee_stat() {{ {STAT}; }}\nrbee_sha() {{ {SHA256}; }}\n{STATS}"
"""The shell helpers the state script and the upload stamps share (same fields in both)."""

PY_SHA256 = (
    "import hashlib, sys\nh = hashlib.sha256()\nwith open(sys.argv[1], 'rb') as f:\n"
    "    for b in iter(lambda: f.read(1 << 20), b''):\n        h.update(b)\nprint(h.hexdigest())"
)
SUM_FUNCTION = f'rbee_sum() {{ python3 -c {shlex.quote(PY_SHA256)} "$1" 2>/dev/null || rbee_sha "$1" | cut -c1-64; }}\n'
"""``rbee_sum FILE``: its sha256, by python3's hashlib (OpenSSL: ~3x coreutils' ``sha256sum`` on the test machine),
else ``rbee_sha`` (needs ``FUNCTIONS``); the check after an upload that did not hash while it was written."""


def wheelhouse_listing(folder: str) -> str:
    """Shell: the sha256 of the wheelhouse's ``stat`` listing (names, sizes, mtimes, inodes; no content read).

    One ``stat`` for every wheel; each line is ``<name> <mode> <owner> <group> <size> <mtime> <inode>``.
    """
    q = shlex.quote(folder)
    return f'( cd {q} 2>/dev/null && set -- *.whl && [ -f "$1" ] && rbee_named "$@" ) | rbee_sha | cut -c1-64'


def _small_files(layout: HostLayout) -> list[str]:
    return [
        f"{CONFIG_DIR}/*.yaml", OLD_API_KEYS_FILE, f"{WORKERS_DIR}/*.env", f"{CREDENTIALS_DIR}/*",
        f"{MACOS_DATA_DIR}/credentials/*", f"{UNITS}/rbee-*.service", f"{LAUNCH_DAEMONS_DIR}/org.rbee.*.plist",
        f"{shlex.quote(layout.prefix)}/release.json",
    ]  # fmt: skip


def _folders(layout: HostLayout) -> list[str]:
    return [
        layout.prefix, layout.models, layout.engines, layout.stamps, layout.wheelhouse, CONFIG_DIR, WORKERS_DIR,
        CREDENTIALS_DIR, DATA_DIR, MACOS_DATA_DIR, MACOS_LOG_DIR, f"{MACOS_DATA_DIR}/credentials",
    ]  # fmt: skip


def state_script(layout: HostLayout, user: str) -> str:
    """The script whose output ``parse_state`` reads (``user``: the service account).

    A few processes whatever the number of files: the paths are gathered by shell tests (no process), then one
    ``sha256sum``, one ``stat`` per kind and one ``awk`` read them all (one process per file made the round trip
    cost hundreds of forks; the test hosts share this machine's cores).
    """
    prefix = shlex.quote(layout.prefix)
    folders = " ".join(shlex.quote(f) for f in _folders(layout))
    temp_dirs = " ".join(
        [*(shlex.quote(f) for f in _folders(layout)), f"{prefix}/engines/*", UNITS, LAUNCH_DAEMONS_DIR]
    )
    q_user = shlex.quote(user)
    stamps = shlex.quote(layout.stamps)
    return f"""{FUNCTIONS}echo "state=begin"
set --
for f in {" ".join(_small_files(layout))}; do [ -f "$f" ] && set -- "$@" "$f"; done
[ $# -gt 0 ] && {{ rbee_sha "$@"; echo "--"; rbee_stats "" "$@"; }} | awk '
  $0 == "--" {{ meta = 1; next }}
  !meta {{ sums[substr($0, 67)] = $1; next }}
  {{ p = $0; for (i = 0; i < 6; i++) sub(/^[^ ]+ /, "", p); if (p in sums) print "file " sums[p] " " $0 }}'
set --
for d in {folders}; do [ -d "$d" ] && set -- "$@" "$d"; done
[ $# -gt 0 ] && rbee_stats "dir " "$@"
set --
for f in {prefix}/models/*.gguf {prefix}/engines/*/*.whl; do [ -f "$f" ] && set -- "$@" "$f"; done
[ $# -gt 0 ] && rbee_stats "big " "$@"
set --
for s in {stamps}/*; do
  if [ -s "$s" ]; then set -- "$@" "$s"; elif [ -f "$s" ]; then echo "stamp ${{s##*/}} "; fi
done
[ $# -gt 0 ] && awk '
  FNR == 1 {{ if (NR > 1) print line; n = FILENAME; sub(/.*[/]/, "", n); line = "stamp " n }}
  length(line) < 4200 {{ line = line " " $0 }}
  END {{ if (NR) print line }}' "$@"
echo "wheelhouse $( {wheelhouse_listing(layout.wheelhouse)} )"
for f in $(find {temp_dirs} -maxdepth 1 -type f -name '.*{TEMP_MARK}*' 2>/dev/null); do
  echo "leftover $(rbee_stat "$f" | cut -d' ' -f4) $f"
done
if command -v dscl >/dev/null 2>&1; then
  dscl . -read /Users/{q_user} UniqueID >/dev/null 2>&1 && echo "account user"
  dscl . -read /Groups/{q_user} PrimaryGroupID >/dev/null 2>&1 && echo "account group"
else
  id -u {q_user} >/dev/null 2>&1 && echo "account user"
  getent group {q_user} >/dev/null 2>&1 && echo "account group"
fi
if [ -d /run/systemd/system ]; then
  units="rbee-queen.service rbee-hive.service"
  for w in {WORKERS_DIR}/*.env; do
    [ -f "$w" ] && {{ w=${{w##*/}}; units="$units rbee-worker@${{w%.env}}.service"; }}
  done
  systemctl show -p Id -p UnitFileState -p ActiveState -p NeedDaemonReload $units 2>/dev/null | sed 's/^/unit /'
  echo "unit "
fi
if command -v launchctl >/dev/null 2>&1; then
  plists=$(ls {LAUNCH_DAEMONS_DIR} 2>/dev/null | sed -n 's/^\\(org\\.rbee\\..*\\)\\.plist$/\\1/p')
  for l in org.rbee.queen org.rbee.hive $plists; do
    o=$(launchctl print "system/$l" 2>/dev/null)
    if [ -z "$o" ]; then s=absent; elif printf '%s\\n' "$o" | grep -q '^[[:space:]]*state = running$'; then s=running
    else s=loaded; fi
    echo "launchd $l $s"
  done
fi
echo "state=done"
"""


@dataclass(frozen=True)
class Meta:
    """What ``stat`` says of a path: octal mode (``644``), owner, group, size, mtime, inode."""

    mode: str
    user: str
    group: str
    size: int = 0
    mtime: int = 0
    inode: int = 0

    def same_mode(self, mode: str | int | None) -> bool:
        """True when ``mode`` (``"0644"``, ``"644"``, 0o644 or None: any) is this one."""
        if mode is None:
            return True
        want = mode if isinstance(mode, int) else int(str(mode), 8)
        return int(self.mode, 8) == want


@dataclass(frozen=True)
class RemoteFile:
    """A small managed file: its sha256 and its ``Meta``."""

    sha256: str
    meta: Meta


@dataclass(frozen=True)
class Upload:
    """A verified upload's stamp: the content's sha256 and the file's size, mtime and inode right after it."""

    sha256: str
    size: int
    mtime: int
    inode: int

    def matches(self, meta: Meta) -> bool:
        """True when the file still is the one uploaded (a replaced or rewritten file has another stat)."""
        return (self.size, self.mtime, self.inode) == (meta.size, meta.mtime, meta.inode)


@dataclass(frozen=True)
class UnitState:
    """A systemd unit as ``systemctl show`` reports it."""

    enabled: bool = False
    active: bool = False
    need_reload: bool = False


@dataclass
class HostState:
    """Everything a deploy compares on one host (see the module docstring). ``complete``: the script finished."""

    files: dict[str, RemoteFile] = field(default_factory=dict)
    dirs: dict[str, Meta] = field(default_factory=dict)
    big: dict[str, Meta] = field(default_factory=dict)
    stamps: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    wheelhouse_listing: str = ""
    account: frozenset[str] = frozenset()
    units: dict[str, UnitState] = field(default_factory=dict)
    launchd: dict[str, str] = field(default_factory=dict)
    leftovers: tuple[str, ...] = ()
    leftover_sizes: dict[str, int] = field(default_factory=dict)
    complete: bool = False

    def worker_instances(self) -> list[str]:
        """The worker instances configured on the host (``/etc/rbee/workers/<name>.env``)."""
        folder = f"{WORKERS_DIR}/"
        return sorted(
            p.removeprefix(folder).removesuffix(".env")
            for p in self.files
            if p.startswith(folder) and p.endswith(".env")
        )

    def installed_engine(self, engines: str, key: str) -> tuple[str, str] | None:
        """The engine wheel of feature set ``key`` the host installed, as (path, sha256), when its install stamp
        names ``key`` and the wheel in ``<engines>/<key>/`` is still its verified upload; else None."""
        if self.stamps.get("engine") != key:
            return None
        folder = f"{engines}/{key}/"
        for path, meta in sorted(self.big.items()):
            stamp = self.uploads.get(path)
            name = path.removeprefix(folder)
            if path.startswith(folder) and "/" not in name and name.endswith(".whl") and stamp and stamp.matches(meta):
                return path, stamp.sha256
        return None

    def daemon_files(self) -> list[str]:
        """The names of rbee's plists in ``/Library/LaunchDaemons``."""
        folder = f"{LAUNCH_DAEMONS_DIR}/"
        return sorted(p.removeprefix(folder) for p in self.files if p.startswith(folder))


def _meta(fields: list[str]) -> Meta:
    mode, user, group, size, mtime, inode = fields
    return Meta(mode, user, group, int(size), int(mtime), int(inode))


def _unit(props: dict[str, str]) -> UnitState:
    return UnitState(
        enabled=props.get("UnitFileState") == "enabled",
        active=props.get("ActiveState") in ("active", "reloading", "activating"),
        need_reload=props.get("NeedDaemonReload") == "yes",
    )


def upload_stamp_line(path: str, sha256: str, size: int, mtime: int, inode: int) -> str:
    """The text of an upload stamp (what ``parse_state`` reads back)."""
    return f"{path} {sha256} {size} {mtime} {inode}"


def parse_state(output: str) -> HostState:
    """Read the script's output (the probe's ``key=value`` lines around it are ignored)."""
    state = HostState()
    leftovers: list[str] = []
    account: set[str] = set()
    props: dict[str, str] = {}
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split()
        try:
            if kind == "file" and len(fields) >= 8:
                state.files[" ".join(fields[7:])] = RemoteFile(fields[0], _meta(fields[1:7]))
            elif kind in ("dir", "big") and len(fields) >= 7:
                target = state.dirs if kind == "dir" else state.big
                target[" ".join(fields[6:])] = _meta(fields[:6])
            elif kind == "stamp" and fields:
                name, value = fields[0], " ".join(fields[1:])
                state.stamps[name] = value
                if name.startswith(UPLOAD_STAMP_PREFIX) and len(fields) == 6:
                    path, sha, size, mtime, inode = fields[1:]
                    state.uploads[path] = Upload(sha, int(size), int(mtime), int(inode))
            elif kind == "wheelhouse":
                state.wheelhouse_listing = rest.strip()
            elif kind == "leftover" and len(fields) >= 2 and fields[0].isdigit():
                path = " ".join(fields[1:])
                leftovers.append(path)
                state.leftover_sizes[path] = int(fields[0])
            elif kind == "account":
                account.add(rest.strip())
            elif kind == "unit":
                key, sep, value = rest.partition("=")
                if sep:
                    props[key.strip()] = value.strip()
                elif props:
                    if props.get("Id"):
                        state.units[props["Id"]] = _unit(props)
                    props = {}
            elif kind == "launchd" and len(fields) == 2:
                state.launchd[fields[0]] = fields[1]
            elif line.strip() == "state=done":
                state.complete = True
        except ValueError:
            continue  # a line this parser cannot read (a path with odd characters): the thing counts as absent
    state.leftovers = tuple(sorted(leftovers))
    state.account = frozenset(account)
    return state


def resumable_temp(dest: str, sha256: str) -> str:
    """The temp file of a verified upload of ``sha256`` to ``dest``: named by the content, so an interrupted copy
    (a prefix of the file: SFTP writes in order) is found by the next deploy and continued."""
    folder, name = dest.rsplit("/", 1) if "/" in dest else (".", dest)
    return f"{folder}/.{name}{TEMP_MARK}{sha256[:16]}"


def upload_stamp(layout: HostLayout, path: str) -> str:
    """Where the verified upload of ``path`` is recorded (``<stamps>/upload-<digest of the path>``)."""
    return f"{layout.stamps}/{UPLOAD_STAMP_PREFIX}{hashlib.sha256(path.encode()).hexdigest()[:16]}"


def upload_stamp_command(dest: str, sha256: str, stamp: str) -> str:
    """Shell: record in ``stamp`` that ``dest`` holds ``sha256``, with its size, mtime and inode now."""
    line = shlex.quote(f"{dest} {sha256}")
    fields = f"$(rbee_stat {shlex.quote(dest)} | cut -d' ' -f4-6)"
    return f"{FUNCTIONS}printf '%s %s\\n' {line} \"{fields}\" > {shlex.quote(stamp)}"
