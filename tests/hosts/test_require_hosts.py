"""``RBEE_REQUIRE_HOSTS=1`` (set by ``scripts/test``): a run that would skip fails with the reason instead.

Each case runs pytest in a subprocess on a tiny suite that loads ``tests.hosts.plugin``; the test-host
case drops root (``setpriv``) so that the hosts are unavailable without booting or touching any.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

CONFTEST = 'pytest_plugins = ["tests.hosts.plugin"]\n'
SUITE = '''
import pytest

@pytest.mark.skipif(True, reason="frobnicate is not installed")
def test_needs_a_tool():
    pass

def test_plain():
    pass
'''
HOSTS_SUITE = '''
def test_on_hosts(test_hosts):
    pass

def test_plain():
    pass
'''
RUNTIME_SKIP = '''
import pytest

def test_skips_late():
    pytest.skip("no frobnicator found at run time")
'''


def run(
    tmp_path: Path, suite: str, *args: str, require: bool, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_suite.py").write_text(suite)
    env = {k: v for k, v in os.environ.items() if k != "RBEE_REQUIRE_HOSTS"}
    env["PYTHONPATH"] = str(ROOT)
    if require:
        env["RBEE_REQUIRE_HOSTS"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
               "-c", "/dev/null", str(tmp_path), *args]  # fmt: skip
    if user is not None:  # the suite's folder must be readable by that user
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_without_the_guard_a_missing_tool_skips(tmp_path: Path) -> None:
    done = run(tmp_path, SUITE, "-rs", require=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout and "frobnicate is not installed" in done.stdout


def test_with_the_guard_a_missing_tool_fails_the_run_naming_it(tmp_path: Path) -> None:
    done = run(tmp_path, SUITE, require=True)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "RBEE_REQUIRE_HOSTS=1" in done.stderr
    assert "frobnicate is not installed: 1 test(s) in test_suite.py" in done.stderr


def test_with_the_guard_a_subset_chosen_on_purpose_still_runs(tmp_path: Path) -> None:
    done = run(tmp_path, SUITE, "-k", "plain", require=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 deselected" in done.stdout


def test_with_the_guard_a_skip_at_run_time_is_a_failure(tmp_path: Path) -> None:
    done = run(tmp_path, RUNTIME_SKIP, require=True)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "RBEE_REQUIRE_HOSTS=1, but this test skipped: no frobnicator found at run time" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop it (setpriv)")
def test_with_the_guard_test_hosts_that_cannot_run_fail_the_run_and_deselecting_them_works() -> None:
    with tempfile.TemporaryDirectory(prefix="rbee-require-") as folder:
        Path(folder).chmod(0o777)
        _hosts_cases(Path(folder))


def _hosts_cases(tmp_path: Path) -> None:
    skipped = run(tmp_path, HOSTS_SUITE, "-rs", require=False, user="65534")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 passed, 1 skipped" in skipped.stdout and "test hosts need root" in skipped.stdout

    failed = run(tmp_path, HOSTS_SUITE, require=True, user="65534")
    assert failed.returncode == pytest.ExitCode.USAGE_ERROR, failed.stdout + failed.stderr
    assert "test hosts need root" in failed.stderr and "1 test(s) in test_suite.py" in failed.stderr

    subset = run(tmp_path, HOSTS_SUITE, "-m", "not hosts", require=True, user="65534")
    assert subset.returncode == 0, subset.stdout + subset.stderr
    assert "1 passed, 1 deselected" in subset.stdout
