"""macOS hosts: the plan renders launchd daemons (plists parsed back with plistlib), no systemd unit;
the Metal memory rule and the preflight decisions on recorded-format outputs (``tests/fixtures/macos/``).

No Mac ran any of this: no launchctl, no Metal build (see the README's "macOS hosts").
"""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path
from typing import Any

import pytest

from rbee.deploy import launchd
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.launchd import LaunchdJob, PlistError, daemon_steps, parse_state, render_plist
from rbee.deploy.macos import (
    GiB,
    launchd_problems,
    metal_memory,
    metal_working_set,
    parse_displays,
    parse_sysctl_int,
)
from rbee.deploy.probe import Requirements, judge, parse_probe
from rbee.spec import parse_spec
from rbee.spec.issues import SpecError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "macos"
LINUX_PROBE = "os=Linux\narch=aarch64\nglibc=2.36\npython=3.11.2\npython_venv=yes\nsystemd=yes\nprobe=done\n"
SPEC = """cluster: t
queen: {host: mini}
hosts:
  - {name: mini, address: 10.0.0.5, backend: metal}
  - {name: studio, address: 10.0.0.6}
models:
  - {id: m, source: 'file:///m.gguf', context: 1024}
  - {id: n, source: 'file:///n.gguf', context: 4096}
placements:
  - {model: m, hosts: [mini], slots: 2}
  - {model: n, hosts: [mini]}
  - {model: m, hosts: [studio]}
"""


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def plan(host: str = "mini", probe: str = "m2-pro-probe.txt", spec: str = SPEC, **kw: Any) -> HostPlan:
    text = probe if "=" in probe else fixture(probe)
    return plan_deployed_host(parse_spec(spec, "cluster.yaml"), host, parse_probe(text), **kw)


def daemons(p: HostPlan) -> dict[str, dict[str, Any]]:
    """Every plist of a plan, parsed back, by label."""
    out = {}
    for f in p.files:
        if f.path.endswith(".plist"):
            parsed: dict[str, Any] = plistlib.loads(f.text.encode())
            out[parsed["Label"]] = parsed
    return out


def test_a_mac_gets_launchd_daemons_and_no_systemd_unit() -> None:
    p = plan(api_keys_text="sk-1\n")
    assert p.service_manager == "launchd" and p.backend == "metal" and p.problems == ()
    assert p.features.os == "darwin" and p.features.libc == "macos14.0" and p.features.gpu_offload
    assert p.units == () and not any("systemd" in f.path or f.path.endswith(".service") for f in p.files)
    assert not any(f.path.endswith(".env") for f in p.files)  # launchd reads no environment file
    labels = ["org.rbee.queen", "org.rbee.hive", "org.rbee.worker.m-1", "org.rbee.worker.n-1"]
    assert [s.unit for s in p.services] == labels and [w.label for w in p.workers] == labels[2:]
    assert sorted(daemons(p)) == sorted(labels)
    for label in labels:
        planned = p.file(f"/Library/LaunchDaemons/{label}.plist")
        assert (planned.mode, planned.group, planned.label) == ("644", "wheel", f"launchd {label}")
    assert p.file("/etc/rbee/queen.yaml").group is None  # configs: root, group the service user, as on Linux
    assert p.file("/etc/rbee/credentials/api-keys").secret


def test_each_plist_runs_its_service_as_the_service_user_and_keeps_it_alive() -> None:
    parsed = daemons(plan(api_keys_text="sk-1\n"))
    logs = {
        "org.rbee.queen": "queen.log",
        "org.rbee.hive": "hive.log",
        "org.rbee.worker.m-1": "worker-m-1.log",
        "org.rbee.worker.n-1": "worker-n-1.log",
    }
    for label, keys in parsed.items():
        assert keys["UserName"] == keys["GroupName"] == "rbee"
        assert keys["KeepAlive"] == {"SuccessfulExit": False} and keys["RunAtLoad"] is True
        assert keys["ThrottleInterval"] == (3 if "worker" in label else 2) and keys["Umask"] == 0o027
        assert keys["StandardOutPath"] == keys["StandardErrorPath"] == f"/usr/local/var/rbee/logs/{logs[label]}"
        assert keys["WorkingDirectory"] == keys["EnvironmentVariables"]["HOME"] == "/usr/local/var/rbee"
        assert keys["ProgramArguments"][:2] == ["/opt/rbee/venv/bin/python", "-m"]
    assert parsed["org.rbee.hive"]["ProgramArguments"][2:] == ["rbee_runtime.hive", "--config", "/etc/rbee/hive.yaml"]
    worker = parsed["org.rbee.worker.n-1"]["ProgramArguments"]
    assert worker[worker.index("--port") + 1] == "7841" and worker[worker.index("--backend") + 1] == "metal"
    assert worker[worker.index("--model-path") + 1] == "/opt/rbee/models/n.gguf"


def test_daemons_run_exactly_what_the_systemd_units_run() -> None:
    """Same spec, the host on Linux: ExecStart (with the worker's RBEE_WORKER_ARGS) == ProgramArguments."""
    mac, linux = plan(api_keys_text="k\n"), plan(probe=LINUX_PROBE, api_keys_text="k\n")
    parsed = daemons(mac)
    for unit, label in (("rbee-queen.service", "org.rbee.queen"), ("rbee-hive.service", "org.rbee.hive")):
        (exec_start,) = [line for line in linux.file(f"/etc/systemd/system/{unit}").text.splitlines()
                         if line.startswith("ExecStart=")]  # fmt: skip
        assert shlex.split(exec_start.removeprefix("ExecStart=")) == parsed[label]["ProgramArguments"]
    for worker in linux.workers:
        env = linux.file(f"/etc/rbee/workers/{worker.name}.env").text
        (args,) = [line for line in env.splitlines() if line.startswith("RBEE_WORKER_ARGS=")]
        expected = [
            "/opt/rbee/venv/bin/python",
            "-m",
            "rbee_runtime.worker",
            *shlex.split(shlex.split(args)[0].split("=", 1)[1]),
        ]
        assert parsed[worker.label]["ProgramArguments"] == expected


def test_the_linux_plan_is_unchanged_by_the_launchd_variant() -> None:
    linux = plan("studio", probe=LINUX_PROBE)
    assert linux.service_manager == "systemd" and linux.units == ("rbee-hive.service", "rbee-worker@.service")
    assert [s.unit for s in linux.services] == ["rbee-hive.service", "rbee-worker@m-1.service"]
    assert not any(f.path.endswith(".plist") or f.group for f in linux.files)


def test_restart_digests_follow_the_inputs_and_the_queen_keys() -> None:
    first = {s.unit: s.digest("r1", {"m": "a", "n": "b"}) for s in plan(api_keys_text="k1\n").services}
    again = {s.unit: s.digest("r1", {"m": "a", "n": "b"}) for s in plan(api_keys_text="k1\n").services}
    keys = {s.unit: s.digest("r1", {"m": "a", "n": "b"}) for s in plan(api_keys_text="k2\n").services}
    model = {s.unit: s.digest("r1", {"m": "a", "n": "c"}) for s in plan(api_keys_text="k1\n").services}
    assert first == again
    assert [u for u in first if first[u] != keys[u]] == ["org.rbee.queen"]
    assert [u for u in first if first[u] != model[u]] == ["org.rbee.hive", "org.rbee.worker.n-1"]


HOSTILE = "x</string><key>UserName</key><string>root</string> & ]]> \"q\" 's' <!-- é ✓"


def test_hostile_values_cannot_break_a_plist() -> None:
    job = LaunchdJob("worker", f"org.rbee.worker.{HOSTILE}", "rbee", "rbee", ["/py", HOSTILE, "&amp;"],
                     {"HOME": HOSTILE}, f"/d/{HOSTILE}", f"/l/{HOSTILE}.log")  # fmt: skip
    parsed = plistlib.loads(render_plist(job).encode())
    assert parsed["UserName"] == "rbee" and parsed["Label"] == f"org.rbee.worker.{HOSTILE}"
    assert parsed["ProgramArguments"] == ["/py", HOSTILE, "&amp;"] and parsed["EnvironmentVariables"] == {
        "HOME": HOSTILE
    }
    assert parsed["WorkingDirectory"] == f"/d/{HOSTILE}" and parsed["KeepAlive"] == {"SuccessfulExit": False}
    with pytest.raises(PlistError, match="control characters"):
        render_plist(LaunchdJob("hive", "org.rbee.hive", "rbee", "rbee", ["/py", "a\x01b"], {}, "/d", "/l"))


def test_a_hostile_prefix_never_reaches_a_plist() -> None:
    """The spec refuses it (paths: safe characters only); a value that got through would still stay one
    value (``test_hostile_values_cannot_break_a_plist`` above renders one directly)."""
    prefix = '/opt/r&b <x> "y"</string>'
    with pytest.raises(SpecError, match=r"deploy\.prefix"):
        plan(spec=SPEC.replace("cluster: t\n", f"cluster: t\ndeploy: {{prefix: '{prefix}'}}\n"))
    p = plan(spec=SPEC.replace("cluster: t\n", "cluster: t\ndeploy: {prefix: '/opt/r+b@x'}\n"))
    parsed = daemons(p)
    assert parsed["org.rbee.hive"]["ProgramArguments"][0] == "/opt/r+b@x/venv/bin/python"
    assert all(keys["UserName"] == "rbee" for keys in parsed.values())


def test_a_skeleton_may_not_set_what_the_plan_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "launchd").mkdir()
    (tmp_path / "launchd" / "rbee-hive.plist").write_bytes(plistlib.dumps({"Label": "x", "RunAtLoad": True}))
    monkeypatch.setenv("RBEE_TEMPLATES", str(tmp_path))
    with pytest.raises(PlistError, match=r"sets \['Label'\]"):
        render_plist(LaunchdJob("hive", "org.rbee.hive", "rbee", "rbee", ["/py"], {}, "/d", "/l"))


@pytest.mark.parametrize(
    ("state", "plist_current", "started_with_current", "expected", "put", "restarts"),
    [
        ("absent", False, False, ["enable", "bootstrap"], True, True),  # first deploy
        ("absent", True, True, ["enable", "bootstrap"], False, True),  # booted out by hand
        ("running", False, False, ["bootout", "enable", "bootstrap"], True, True),  # plist changed
        ("running", True, False, ["kickstart -k"], False, True),  # config, model or release changed
        ("running", True, True, [], False, False),  # nothing to do
        ("loaded", True, True, ["kickstart"], False, False),  # exited 0: KeepAlive does not restart it
    ],
)
def test_daemon_steps(
    state: launchd.DaemonState, plist_current: bool, started_with_current: bool, expected: list[str], put: bool,
    restarts: bool,
) -> None:  # fmt: skip
    steps = daemon_steps("org.rbee.hive", state, plist_current, started_with_current)
    verbs = [c.split(" system")[0].removeprefix("launchctl ") for c in steps.commands]
    assert verbs == expected and steps.put == put and steps.restarts == restarts
    assert all("systemctl" not in c for c in steps.commands)
    if "bootout" in expected:  # the old job leaves before its plist is replaced
        assert steps.before == (launchd.bootout_command("org.rbee.hive"),) and "launchctl print" in steps.before[0]
    if "bootstrap" in expected:
        assert steps.after[-1] == "launchctl bootstrap system /Library/LaunchDaemons/org.rbee.hive.plist"


def test_launchctl_print_states() -> None:
    assert parse_state(fixture("launchctl-print-running.txt")) == "running"
    assert parse_state(fixture("launchctl-print-exited.txt")) == "loaded"
    assert parse_state("") == "absent"
    assert launchd.stale_workers(["org.rbee.hive.plist", "org.rbee.worker.m-1.plist", "org.rbee.worker.x-2.plist",
                                  "org.rbee.worker.m-1.plist.bak"], ["m-1"]) == ["x-2"]  # fmt: skip


def needs(backend: str = "auto") -> Requirements:
    return Requirements(backend=backend, gpus="all", min_ram_bytes=GiB, min_disk_bytes=GiB)


def test_judge_asks_a_mac_for_launchd_not_systemd() -> None:
    facts = parse_probe(fixture("m2-pro-probe.txt"))
    assert not facts.systemd and judge(facts, needs("metal")) == []
    assert facts.backend_for("auto") == "metal"
    old = parse_probe(fixture("m2-pro-probe.txt").replace("macos=14.5", "macos=10.9.5"))
    assert any("launchctl bootstrap/bootout/kickstart" in p for p in judge(old, needs()))
    blank = parse_probe(fixture("m2-pro-probe.txt").replace("macos=14.5\n", ""))
    assert any("sw_vers gave no macOS version" in p for p in judge(blank, needs()))
    intel = parse_probe(fixture("m2-pro-probe.txt").replace("arch=arm64", "arch=x86_64"))
    assert any("Apple silicon (arm64) only" in p for p in judge(intel, needs("cpu")))
    assert not any("systemd" in p for p in judge(intel, needs("cpu")))
    # the Xcode command line tools' python3 (3.9) is what an SSH session finds first on a stock Mac
    assert any("python3 is 3.9.6" in p for p in judge(parse_probe(fixture("m3-max-probe.txt")), needs()))
    assert launchd_problems("15.0", "arm64") == []


def test_metal_memory_from_recorded_outputs() -> None:
    m2 = metal_memory(
        fixture("m2-pro-system_profiler-SPDisplaysDataType.json"),
        fixture("m2-pro-sysctl-hw.memsize.txt"),
        fixture("m2-pro-sysctl-iogpu.wired_limit_mb.txt"),
    )
    assert [(g.name, g.cores, g.metal, g.apple_silicon) for g in m2.gpus] == [("Apple M2 Pro", 19, "metal3", True)]
    assert m2.ram_bytes == 32 * GiB and m2.working_set_bytes == 32 * GiB * 2 // 3 and m2.wired_limit_mb == 0
    m3 = metal_memory(
        fixture("m3-max-system_profiler-SPDisplaysDataType.json"), fixture("m3-max-sysctl-hw.memsize.txt")
    )
    assert [(g.name, g.cores) for g in m3.gpus] == [("Apple M3 Max", 40)]  # the built-in display is not a GPU
    assert m3.ram_bytes == 64 * GiB and m3.working_set_bytes == 48 * GiB
    raised = metal_memory("{}", "68719476736\n", fixture("m3-max-sysctl-iogpu.wired_limit_mb.txt"))
    assert raised.working_set_bytes == 56 * GiB and raised.gpus == ()
    assert metal_working_set(16 * GiB) == 16 * GiB * 2 // 3 and metal_working_set(192 * GiB) == 144 * GiB
    assert metal_working_set(36 * GiB) == 24 * GiB and parse_sysctl_int("kern.x: 3\n", "hw.memsize") == 0
    assert parse_displays('{"SPDisplaysDataType": [{"_name": "kHW_AMD", "sppci_cores": "x"}]}')[0].cores == 0


def test_models_that_fit_the_ram_but_not_the_metal_working_set_stop_the_host() -> None:
    # M2 Pro, 32 GiB: RAM needs (13 + 5) * 1.2 + 0.5 = 22.1 GiB (fits), Metal gets 21.3 GiB (does not)
    sizes = {"m": 13 * GiB, "n": 5 * GiB}
    (problem,) = plan(model_bytes=sizes).problems
    assert problem.startswith("Metal working set 21.3 GiB (of 32.0 GiB unified memory) < 21.6 GiB needed")
    assert plan(model_bytes={"m": 12 * GiB, "n": 5 * GiB}).problems == ()  # 20.4 GiB fits
    m3_max = fixture("m3-max-probe.txt").replace("python=3.9.6", "python=3.12.4")  # 64 GiB: Metal gets 48
    assert plan(probe=m3_max, model_bytes={"m": 30 * GiB, "n": 9 * GiB}).problems == ()  # 46.8 GiB
    # a CPU host is not held to the Metal rule
    cpu = SPEC.replace("backend: metal", "backend: cpu")
    assert plan(spec=cpu, model_bytes=sizes).problems == ()
