"""The shell script that takes rbee off a host a deploy prunes (``decommission_script``), and the one that takes only
the queen off a host that stays a hive (``queen_removal_script``). Both run as root in one round trip, are idempotent
(a second run finds nothing and succeeds), and end by checking that no rbee service still runs.

Order, so that nothing in flight is cut: the placed workers are stopped first, all at once (SIGTERM: each drains,
finishing its requests within its unit's ``TimeoutStopSec``; the hive reports them draining, so the queen routes
nothing new to them), then the hive (its last heartbeat goes out as it stops) and the queen; then the units are
disabled and removed (``daemon-reload``), then the files: ``/etc/rbee`` (configs, credentials, worker settings),
the hive's state, and rbee's own entries of the prefix (venv, wheelhouse, engines, models, stamps, kept releases,
records; named one by one: the prefix may be a folder the operator also uses, so it goes only when left empty).
The service account stays (as a Debian package's system user does on purge): it may predate rbee, and owns nothing
afterwards; ``userdel rbee`` removes it. The deregistration at the queen follows, from the control machine.
"""

from __future__ import annotations

import shlex

from rbee.deploy import launchd
from rbee.deploy.applied_hosts import RECORD_FILE
from rbee.deploy.layout import (
    CLUSTER_SECRET_NAME,
    CONFIG_DIR,
    CREDENTIALS_DIR,
    DATA_DIR,
    LAUNCH_DAEMONS_DIR,
    MACOS_DATA_DIR,
    WORKERS_DIR,
)
from rbee.deploy.release_record import PROVENANCE, RECORD
from rbee.deploy.releases import UNITS

PREFIX_ENTRIES = (
    "venv",
    "wheelhouse",
    "engines",
    "models",
    "stamps",
    "releases",
    "build",
    RECORD,
    PROVENANCE,
    RECORD_FILE,
)
"""What rbee puts in the prefix (``rbee.deploy.layout``, ``host_releases``, ``rbee.engine.remote_build``)."""

UNIT_FILES = ("rbee-queen.service", "rbee-hive.service", "rbee-worker@.service")

DONE_MARK = "rbee-decommission: done"


def _systemd_stop_all(root: str) -> str:
    """Stop workers, then hive and queen; disable them; remove their unit files; reload systemd."""
    units_dir = shlex.quote(f"{root}{UNITS}")
    unit_files = " ".join(shlex.quote(f"{root}{UNITS}/{u}") for u in UNIT_FILES)
    return f"""if [ -d {shlex.quote(root)}/run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  workers=$(systemctl list-units --all --plain --no-legend 'rbee-worker@*.service' 2>/dev/null | awk '{{print $1}}')
  for w in {shlex.quote(root + WORKERS_DIR)}/*.env; do
    [ -f "$w" ] && {{ w=${{w##*/}}; workers="$workers rbee-worker@${{w%.env}}.service"; }}
  done
  workers=$(printf '%s\\n' $workers | sort -u)
  if [ -n "$workers" ]; then
    echo "stopping (draining) $(echo $workers)"
    systemctl stop $workers
    systemctl disable $workers >/dev/null 2>&1
  fi
  systemctl stop rbee-hive.service rbee-queen.service 2>/dev/null
  systemctl disable rbee-hive.service rbee-queen.service >/dev/null 2>&1
  rm -f {unit_files}
  rm -rf {units_dir}/rbee-*.service.d
  systemctl daemon-reload
  systemctl reset-failed 'rbee-*' 2>/dev/null
  left=$(systemctl list-units --all --plain --no-legend 'rbee-*' 2>/dev/null \
    | awk '$3 == "active" || $3 == "activating" || $3 == "deactivating" {{print $1}}')
  if [ -n "$left" ]; then echo "rbee services still running: $(echo $left)" >&2; exit 1; fi
fi
"""


def _launchd_stop_all(root: str) -> str:
    """Boot out every rbee daemon (workers first) and wait until launchd let each go; remove the plists, the state."""
    daemons = shlex.quote(root + LAUNCH_DAEMONS_DIR)
    labels = f"$(ls {daemons} 2>/dev/null | sed -n 's/^\\(org\\.rbee\\.worker\\..*\\)\\.plist$/\\1/p')"
    tries = launchd.BOOTOUT_WAIT_S * 2
    return f"""if command -v launchctl >/dev/null 2>&1 && [ -d {daemons} ]; then
  for l in {labels} {launchd.HIVE_LABEL} {launchd.QUEEN_LABEL}; do
    launchctl bootout "system/$l" 2>/dev/null; i=0
    while launchctl print "system/$l" >/dev/null 2>&1; do
      i=$((i+1)); if [ "$i" -gt {tries} ]; then echo "$l still loaded after bootout" >&2; exit 1; fi; sleep 0.5
    done
    rm -f {daemons}/"$l.plist"
  done
  rm -rf {shlex.quote(root + MACOS_DATA_DIR)}
fi
"""


def decommission_script(prefix: str, root: str = "") -> str:
    """The script that takes every trace of rbee off a host but its service account (``prefix``: ``deploy.prefix``;
    ``root``: a folder every system path is taken under, for the tests)."""
    q = shlex.quote(root + prefix)
    entries = " ".join(shlex.quote(f"{root}{prefix}/{e}") for e in PREFIX_ENTRIES)
    return f"""set -u
{_systemd_stop_all(root)}{_launchd_stop_all(root)}rm -rf {shlex.quote(root + CONFIG_DIR)} {shlex.quote(root + DATA_DIR)}
rm -rf {entries}
[ -d {q} ] && find {q} -maxdepth 1 -name '.*.rbee-tmp-*' -exec rm -rf {{}} + 2>/dev/null
if [ -d {q} ] && ! rmdir {q} 2>/dev/null; then echo {shlex.quote(f"kept {prefix}: it holds files not rbee's")}; fi
echo {shlex.quote(DONE_MARK)}
"""


def queen_removal_script(prefix: str, root: str = "") -> str:
    """The script that takes the queen off a host that stays a hive (the queen moved): its unit, its config, the
    cluster secret, the API keys and the applied-hosts record; the hive and its workers are not touched."""
    unit = shlex.quote(f"{root}{UNITS}/rbee-queen.service")
    files = " ".join(shlex.quote(root + p) for p in (
        f"{CONFIG_DIR}/queen.yaml", f"{CREDENTIALS_DIR}/{CLUSTER_SECRET_NAME}", f"{CREDENTIALS_DIR}/api-keys",
        f"{prefix}/{RECORD_FILE}", f"{prefix}/stamps/service-rbee-queen.service",
    ))  # fmt: skip
    daemons = shlex.quote(root + LAUNCH_DAEMONS_DIR)
    return f"""set -u
if [ -d {shlex.quote(root)}/run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl stop rbee-queen.service 2>/dev/null
  systemctl disable rbee-queen.service >/dev/null 2>&1
  rm -f {unit}
  systemctl daemon-reload
  systemctl reset-failed rbee-queen.service 2>/dev/null
  if systemctl is-active --quiet rbee-queen.service; then echo "rbee-queen still running" >&2; exit 1; fi
fi
if command -v launchctl >/dev/null 2>&1 && [ -d {daemons} ]; then
  {launchd.bootout_command(launchd.QUEEN_LABEL)}
  rm -f {daemons}/{launchd.QUEEN_LABEL}.plist
fi
rm -f {files}
echo {shlex.quote(DONE_MARK)}
"""
