"""The harness's view of its own processes: a host is never taken for dead while its launcher execs nspawn.

No hosts boot here.
"""

from __future__ import annotations

import subprocess

from rbee.testhosts.system import cmdline, is_alive


def test_a_process_inside_execve_still_shows_its_arguments() -> None:
    # `sh -c 'exec ...'` is how a host's nspawn starts; during the exec the kernel briefly shows an empty
    # argument vector, which once made a booting host look "not running" (a whole CI session lost to it).
    empty_while_alive = 0
    for _ in range(40):
        process = subprocess.Popen(["sh", "-c", 'exec "$@"', "launcher", "sleep", "0.02"])
        try:
            while process.poll() is None:
                args = cmdline(process.pid)
                if not args and is_alive(process.pid):
                    empty_while_alive += 1
        finally:
            process.wait()
    assert empty_while_alive == 0


def test_a_process_that_is_gone_has_no_arguments() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert cmdline(process.pid) == []
