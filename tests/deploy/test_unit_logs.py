"""The failed gate's host report: its command is valid shell that prints nothing where systemd is absent (a Mac),
and the reports read as indented lines under each host. On real units: tests/deploy/test_rollout_hosts.py."""

from __future__ import annotations

import subprocess

from rbee.rollout.unit_logs import describe_reports, unit_report_command


def test_the_command_is_valid_shell_and_quiet_without_systemd() -> None:
    command = unit_report_command(1_700_000_000.7)
    assert "--since @1700000000 " in command and "-n 20 " in command
    assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0
    done = subprocess.run(["/bin/sh", "-c", command], env={"PATH": "/nonexistent"}, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "")


def test_reports_are_indented_under_their_host() -> None:
    reports = {"h2": "unit rbee-hive.service: activating/auto-restart\nhive: port 22 in use", "h3": "x"}
    assert describe_reports(reports) == (
        "\nh2:\n  unit rbee-hive.service: activating/auto-restart\n  hive: port 22 in use\nh3:\n  x"
    )
    assert describe_reports({}) == ""
