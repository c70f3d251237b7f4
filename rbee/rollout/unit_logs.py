"""Why a batch failed its health gate, as its hosts tell it: rbee's units that are not running, and their journal
since the batch began (read over SSH once per host, in parallel; launchd hosts answer with nothing)."""

from __future__ import annotations

import shlex
from pathlib import Path

from rbee.rollout.host_read import read_on_hosts

#: Journal lines shown per host: enough for a traceback's last frames and the unit's exit line.
JOURNAL_LINES = 20


def unit_report_command(since: float, lines: int = JOURNAL_LINES) -> str:
    """The read-only shell command that prints rbee's units not ``active running`` and their last ``lines`` journal
    lines since ``since`` (wall time); as root, or through ``sudo -n`` when the login user may."""
    since_arg = shlex.quote(f"@{int(since)}")
    return (
        "command -v systemctl >/dev/null || exit 0; "
        'as=""; [ "$(id -u)" = 0 ] || as="sudo -n"; '
        "systemctl list-units --all --no-legend --plain 'rbee-*' 2>/dev/null"
        " | awk '$3 != \"active\" || $4 != \"running\" {print \"unit \" $1 \": \" $3 \"/\" $4}'; "
        f"$as journalctl --no-pager --quiet -o short --no-hostname -n {lines} --since {since_arg}"
        " -u 'rbee-*' -p info 2>/dev/null | grep -v '^-- ' || true"
    )


def unit_reports(spec_file: Path, hosts: list[str], since: float) -> dict[str, str]:
    """Host → its report (stripped; hosts that printed nothing, or were not reached, are left out)."""
    found = read_on_hosts(spec_file, unit_report_command(since), limit=hosts, timeout_s=60)
    return {host: text.strip() for host, text in found.items() if text.strip()}


def describe_reports(reports: dict[str, str]) -> str:
    """The reports as lines to append to a failure's reason ("" when none)."""
    indented = {host: "".join(f"\n  {line}" for line in text.splitlines()) for host, text in reports.items()}
    return "".join(f"\n{host}:{lines}" for host, lines in indented.items())
