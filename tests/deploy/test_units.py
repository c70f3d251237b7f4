"""The systemd units rendered from rbee/templates/ are valid and hardened (checked offline with systemd-analyze)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rbee.deploy.templates import UnitSettings, render_unit

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def context(backend: str = "cpu", log_format: str = "text") -> UnitSettings:
    return UnitSettings(
        cluster="lab", host="h1", python=sys.executable, service_user="nobody", config_dir="/etc/rbee",
        workers_dir="/etc/rbee/workers", data_dir="/var/lib/rbee", backend=backend, gpu_indices=[0, 1],
        loading_timeout=300.0, log_format=log_format,
    )  # fmt: skip


def write_units(folder: Path, backend: str, log_format: str = "text") -> list[Path]:
    paths = []
    for name in ("rbee-queen.service", "rbee-hive.service", "rbee-worker@.service"):
        path = folder / name
        path.write_text(render_unit(name, context(backend, log_format)))
        paths.append(path)
    instance = folder / "rbee-worker@tiny-1.service"
    instance.symlink_to(folder / "rbee-worker@.service")
    return [*paths[:2], instance]


@pytest.mark.parametrize(("backend", "log_format"), [("cpu", "text"), ("cuda", "text"), ("cpu", "json")])
def test_units_verify(tmp_path: Path, backend: str, log_format: str) -> None:
    """Type=notify, WatchdogSec, SyslogIdentifier=rbee-worker@%i and the JSON log environment included."""
    units = write_units(tmp_path, backend, log_format)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    # every line about our files is a problem (verify exits 0 on a directive it ignores): the env file is not there
    problems = [line for line in result.stderr.splitlines() if str(tmp_path) in line and "EnvironmentFile" not in line
                and "Special user nobody configured" not in line]  # fmt: skip
    assert result.returncode == 0 and not problems, result.stderr


def test_cuda_units_allow_only_nvidia_devices() -> None:
    text = render_unit("rbee-worker@.service", context("cuda"))
    assert "DevicePolicy=closed" in text and "DeviceAllow=/dev/nvidia1 rw" in text and "PrivateDevices" not in text
    cpu = render_unit("rbee-worker@.service", context("cpu"))
    assert "PrivateDevices=yes" in cpu and "DeviceAllow" not in cpu


@pytest.mark.parametrize("name", ["rbee-queen.service", "rbee-hive.service", "rbee-worker@.service"])
def test_units_are_hardened(tmp_path: Path, name: str) -> None:
    unit = tmp_path / name
    unit.write_text(render_unit(name, context()))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
    exposure = float(line.split("level for")[1].split(":")[1].split()[0])
    assert exposure <= 3.0, result.stdout[-2000:]
