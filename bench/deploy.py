"""How long a deploy takes and how many remote calls it makes: first deploy and no-op, for 1, 2 and 4 hosts.

Run (as root): ``.venv/bin/python -m bench.deploy [--sizes 1,2,4] [--json PATH]``. Boots fresh test hosts
for each size (so every first deploy starts from a bare Debian), deploys the tiny model to every host with
``pyinfra inventory/inventory.py deploys/site.py`` (through ``rbee.deploys.count_commands``, which counts every
remote command and transfer per host), then re-runs it (the no-op). The baseline, on the same hosts in the
same run: a bare pyinfra deploy of 12 operations (folders and small files) and its no-op re-run; each rbee
figure is printed with its ratio to it. On the first size, the tiny model is then swapped for a large one
(a GGUF padded to ``--large-mib``; its no-op should cost what the tiny one's does: nothing is re-hashed).
``--ansible`` also times an ansible no-op on the same hosts. ``--copy-mib N``: on every size, a model copy
figure: a deploy where only the model changed (the tiny one swapped for an N MiB one), its copy step timed
(one ``ssh`` stream per host that hashes, fsyncs, renames and stamps, ``rbee.deploys.stream``; or pyinfra's SFTP
transfer, then the check, fsync and rename), against the same file
copied to the same hosts in parallel with plain ``scp`` (and ``rsync`` when both sides have it; otherwise
skipped with the reason; each the best of 2 runs, the file read into the page cache first), and with
paramiko's SFTP alone (pyinfra's transport, without pyinfra), over the same key and addresses. The engine
build is excluded (cached before).
The figures go to ``bench/results/deploy-<date>-<commit>.json`` (or ``--json PATH``), and their chart beside it
(``.png``, :mod:`bench.charts`).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko

from bench import charts
from rbee.deploy.layout import HostLayout
from rbee.deploys.count_commands import read_log
from rbee.engine.features import local_feature_set
from rbee.engine.wheelcache import build_wheel, cached_wheel
from rbee.spec import load_spec
from rbee.testhosts import TestHosts, spec_for_hosts
from rbee.testhosts.paths import Paths
from rbee.tiny_model import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

BARE_DEPLOY = '''"""The baseline: a bare pyinfra deploy of 12 operations (6 folders, 6 small files)."""
import io
from pyinfra import host
from pyinfra.operations import files

files.directory(name="folder 0", path="/srv/bench/0", mode="755")
files.directory(name="folder 1", path="/srv/bench/1", mode="755")
files.directory(name="folder 2", path="/srv/bench/2", mode="750")
files.directory(name="folder 3", path="/srv/bench/3", mode="700")
files.directory(name="folder 4", path="/srv/bench/4", mode="755")
files.directory(name="folder 5", path="/srv/bench/5", mode="755")
files.put(name="file 0", src=io.StringIO(f"0 {host.name}\\n"), dest="/srv/bench/0/a.conf", mode="644")
files.put(name="file 1", src=io.StringIO(f"1 {host.name}\\n"), dest="/srv/bench/1/b.conf", mode="644")
files.put(name="file 2", src=io.StringIO(f"2 {host.name}\\n"), dest="/srv/bench/2/c.conf", mode="640")
files.put(name="file 3", src=io.StringIO(f"3 {host.name}\\n"), dest="/srv/bench/3/d.conf", mode="600")
files.put(name="file 4", src=io.StringIO(f"4 {host.name}\\n"), dest="/srv/bench/4/e.conf", mode="644")
files.put(name="file 5", src=io.StringIO(f"5 {host.name}\\n"), dest="/srv/bench/5/f.conf", mode="644")
'''


TIMED = """import json, sys, time
from pathlib import Path
from pyinfra.connectors.ssh import SSHConnector
from rbee.deploys import count_commands
from rbee.deploys.stream import StreamUpload

timing = Path(sys.argv.pop(1))

def timed(kind, method, text_of):
    def wrapper(self, *args, **kwargs):
        start = time.time()
        try:
            return method(self, *args, **kwargs)
        finally:
            end = time.time()
            line = {"host": self.host.name, "kind": kind, "text": text_of(*args), "start": start, "end": end}
            with timing.open("a") as out:
                out.write(json.dumps(line) + "\\n")
    return wrapper

SSHConnector.run_shell_command = timed("command", SSHConnector.run_shell_command, lambda c, *_: str(c))
SSHConnector.put_file = timed("put", SSHConnector.put_file, lambda _src, remote, *_: str(remote))

def timed_stream(method):
    def wrapper(self, state, host, *args):
        start = time.time()
        try:
            return method(self, state, host, *args)
        finally:
            line = {"host": host.name, "kind": "put", "text": self.upload.temp, "start": start, "end": time.time()}
            with timing.open("a") as out:
                out.write(json.dumps(line) + "\\n")
    return wrapper

StreamUpload.execute = timed_stream(StreamUpload.execute)
count_commands.main()
"""
"""``python -c TIMED TIMING LOG PYINFRA-ARGS...``: ``rbee.deploys.count_commands`` with each remote call's start and end
(epoch seconds) appended to ``TIMING`` (JSON lines ``{"host", "kind", "text", "start", "end"}``; a streamed upload,
``rbee.deploys.stream``, is a ``put`` of its temp file)."""

SSH_OPTIONS = [
    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
]  # fmt: skip


class Run:
    """One counted pyinfra run: wall time, remote calls per host, and the calls by kind."""

    def __init__(self, seconds: float, calls: list[dict[str, str]]) -> None:
        self.seconds = seconds
        self.calls = calls

    def per_host(self, hosts: list[str]) -> dict[str, int]:
        counted = Counter(c["host"] for c in self.calls)
        return {h: counted.get(h, 0) for h in hosts}

    def transfers(self) -> int:
        return sum(1 for c in self.calls if c["kind"] != "command")


def _pyinfra(args: list[str], env: dict[str, str], log: Path, timing: Path | None = None) -> Run:
    """One pyinfra run through ``count_commands``; ``timing``: also log each remote call's start and end."""
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "rbee.deploys.count_commands", str(log), "-y", *args]
    if timing:
        timing.unlink(missing_ok=True)
        command = [sys.executable, "-c", TIMED, str(timing), str(log), "-y", *args]
    started = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return Run(elapsed, read_log(log))


def _deploy(spec: Path, log: Path, timing: Path | None = None) -> Run:
    return _pyinfra(["inventory/inventory.py", "deploys/site.py"], {"RBEE_SPEC": str(spec)}, log, timing)


def _bare(folder: Path, names: list[str], log: Path) -> Run:
    inventory, deploy = folder / "bare_inventory.py", folder / "bare_deploy.py"
    ssh = {"ssh_user": "root", "ssh_key": str(Paths.default().key), "ssh_known_hosts_file": "/dev/null"}
    hosts = [(TestHosts.address(n), {**ssh, "node": n}) for n in names]
    inventory.write_text(f"hosts = {hosts!r}\n")
    deploy.write_text(BARE_DEPLOY)
    return _pyinfra([str(inventory), str(deploy)], {}, log)


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def _ansible(spec: Path, inventory: Path) -> float:
    rbee = str(Path(sys.executable).parent / "rbee")
    subprocess.run([rbee, "spec", "ansible-inventory", str(spec), "-o", str(inventory)], check=True, cwd=ROOT)
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    run = subprocess.run(
        [playbook, "-i", str(inventory), "playbooks/site.yml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"ansible-playbook failed:\n{run.stdout[-3000:]}")
    return elapsed


def _spec(path: Path, names: list[str], model: Path, model_id: str = "tiny", cache: Path | None = None) -> Path:
    """A spec placing ``model`` on every host; ``cache``: a model cache of its own (the large model's)."""
    deploy = f"\ndeploy: {{model_cache: '{cache}'}}" if cache else ""
    path.write_text(
        spec_for_hosts(
            names, cluster="bench", queen_host="h1",
            models_yaml=f"- {{id: {model_id}, source: 'file://{model}', context: 512}}",
            placements_yaml=f"- {{model: {model_id}, replicas: {len(names)}}}",
            extra_yaml="runtime: {heartbeat_interval: 1s, stale_timeout: 5s}" + deploy,
        )
    )  # fmt: skip
    return path


def _large_model(tiny: Path, folder: Path, mib: int) -> Path:
    """The tiny GGUF padded with zeros to ``mib`` MiB (llama.cpp ignores bytes after the tensor data)."""
    big = folder / f"padded-{mib}MiB.gguf"
    shutil.copy(tiny, big)
    os.truncate(big, mib * 2**20)
    return big


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "nogit"


def _measure_size(hosts: TestHosts, folder: Path, size: int, model: Path, noop_runs: int) -> dict[str, Any]:
    hosts.down()
    names = [f"h{i}" for i in range(1, size + 1)]
    hosts.up(size)
    spec = _spec(folder / f"cluster-{size}.yaml", names, model)
    log = folder / "calls.jsonl"
    first = _deploy(spec, log)
    noops = [_deploy(spec, log) for _ in range(noop_runs)]
    bare_first = _bare(folder, names, log)
    bare_noops = [_bare(folder, names, log) for _ in range(noop_runs)]
    noop, bare_noop = _median(noops), _median(bare_noops)
    addresses = [TestHosts.address(n) for n in names]  # the bare inventory names its hosts by address
    return {
        "hosts": size,
        "first_deploy_s": round(first.seconds, 2),
        "first_deploy_calls_per_host": first.per_host(names),
        "first_deploy_transfers": first.transfers(),
        "noop_s": round(noop.seconds, 2),
        "noop_runs_s": [round(r.seconds, 2) for r in noops],
        "noop_calls_per_host": noop.per_host(names),
        "bare_first_s": round(bare_first.seconds, 2),
        "bare_noop_s": round(bare_noop.seconds, 2),
        "bare_noop_calls_per_host": dict(zip(names, bare_noop.per_host(addresses).values(), strict=True)),
        "noop_vs_bare": round(noop.seconds / bare_noop.seconds, 2),
        "spec": str(spec),
    }


def _measure_large(folder: Path, size: int, tiny: Path, mib: int, noop_runs: int) -> dict[str, Any]:
    """On the hosts of ``size``: the tiny model's no-op, then the large model's first deploy and no-op."""
    names = [f"h{i}" for i in range(1, size + 1)]
    log = folder / "calls.jsonl"
    tiny_spec = folder / f"cluster-{size}.yaml"
    tiny_noops = [_deploy(tiny_spec, log) for _ in range(noop_runs)]
    big_spec = _spec(
        folder / f"cluster-{size}-large.yaml", names, _large_model(tiny, folder, mib), "large", folder / "models"
    )  # the temp folder holds the large model's cache: it goes with it
    first = _deploy(big_spec, log)
    noops = [_deploy(big_spec, log) for _ in range(noop_runs)]
    big_noop, tiny_noop = _median(noops), _median(tiny_noops)
    hashed = [  # a command (not the preflight's state script) that reads a model to hash it
        c["text"][:120] for r in noops for c in r.calls
        if ".gguf" in c["text"] and "sha" in c["text"] and "state=begin" not in c["text"]
    ]  # fmt: skip
    return {
        "hosts": size,
        "model_mib": mib,
        "first_deploy_s": round(first.seconds, 2),
        "noop_s": round(big_noop.seconds, 2),
        "tiny_noop_s": round(tiny_noop.seconds, 2),
        "noop_vs_tiny": round(big_noop.seconds / tiny_noop.seconds, 2),
        "noop_calls_per_host": big_noop.per_host(names),
        "noop_hashing_commands": hashed,
    }


def _timed_calls(timing: Path) -> list[dict[str, Any]]:
    """The remote calls of a timed run, in the order they ended."""
    if not timing.exists():
        return []
    return [json.loads(line) for line in timing.read_text().splitlines() if line.strip()]


def copy_step(calls: list[dict[str, Any]], model_id: str) -> dict[str, Any]:
    """The copy of ``model_id`` in a timed deploy: per host, its transfer (the put of the model's temp file: an ssh
    stream that also checks, fsyncs, renames and stamps, or pyinfra's SFTP put) and its finish (pyinfra's path only:
    the one command after the put); overall, the step's wall time from the first transfer's start to the last end
    (the hosts copy in parallel)."""
    marker = f"/.{model_id}.gguf"
    puts = [c for c in calls if c["kind"] == "put" and marker in c["text"]]
    finishes = [c for c in calls if c["kind"] == "command" and marker in c["text"] and "mv -f" in c["text"]]
    if not puts:
        raise SystemExit(f"no copy of {model_id} in the timed deploy")
    hosts = sorted({c["host"] for c in puts})
    per_host = {
        h: {
            "transfer_s": round(sum(c["end"] - c["start"] for c in puts if c["host"] == h), 2),
            "finish_s": round(sum(c["end"] - c["start"] for c in finishes if c["host"] == h), 2),
        }
        for h in hosts
    }
    start = min(c["start"] for c in puts)
    return {
        "copy_s": round(max(c["end"] for c in puts + finishes) - start, 2),
        "transfer_s": round(max(c["end"] for c in puts) - start, 2),
        "finish_s": round(max(c["end"] for c in finishes) - min(c["start"] for c in finishes), 2) if finishes else 0.0,
        "streamed": not finishes,
        "per_host": per_host,
        "dest_folder": posixpath.dirname(puts[0]["text"]),
    }


def _read(path: Path) -> None:
    """Read a file once (into the page cache): a fresh sparse file's first read costs more than a copy's."""
    with path.open("rb") as f:
        while f.read(8 * 2**20):
            pass


def _sync() -> float:
    """``sync`` the machine (the test hosts share its kernel and disk): the seconds it took."""
    started = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def _parallel(commands: dict[str, list[str]], timeout: float = 900) -> float:
    """Start one command per host at once; the seconds until the last one ended (any failure stops the bench)."""
    started = time.perf_counter()
    procs = {
        h: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for h, c in commands.items()
    }
    for h, proc in procs.items():
        _out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"{commands[h][0]} to {h} failed (exit {proc.returncode}): {err.strip()[-1000:]}")
    return time.perf_counter() - started


def _remote_rm(key: Path, names: list[str], path: str) -> None:
    _parallel(
        {h: ["ssh", "-i", str(key), *SSH_OPTIONS, f"root@{TestHosts.address(h)}", f"rm -f {path}"] for h in names}
    )


def _scp(key: Path, names: list[str], src: Path, dest: str) -> float:
    """Plain ``scp`` of ``src`` to ``dest`` on every host at once (OpenSSH >= 9 speaks SFTP underneath)."""
    return _parallel(
        {h: ["scp", "-q", "-i", str(key), *SSH_OPTIONS, str(src), f"root@{TestHosts.address(h)}:{dest}"] for h in names}
    )


def _rsync_missing(hosts: TestHosts, name: str) -> str | None:
    """Why rsync cannot be timed (None: it can): it must be installed here and on the host."""
    if shutil.which("rsync") is None:
        return "rsync is not installed on the control machine"
    if hosts.ssh(name, "command -v rsync").returncode != 0:
        return f"rsync is not installed on the test hosts ({name})"
    return None


def _rsync(key: Path, names: list[str], src: Path, dest: str) -> float:
    ssh = shlex.join(["ssh", "-i", str(key), *SSH_OPTIONS])
    return _parallel(
        {h: ["rsync", "--whole-file", "-e", ssh, str(src), f"root@{TestHosts.address(h)}:{dest}"] for h in names}
    )


def _paramiko(key: Path, names: list[str], src: Path, dest: str) -> float:
    """paramiko's SFTP ``put`` alone (what pyinfra's connector calls), one thread per host, in this process."""
    errors: list[str] = []

    def one(name: str) -> None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(
                TestHosts.address(name), username="root", key_filename=str(key), look_for_keys=False, allow_agent=False
            )
            with client.open_sftp() as sftp:
                sftp.put(str(src), dest)
        except Exception as exc:  # reported below: the bench stops
            errors.append(f"{name}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit("paramiko SFTP failed: " + "; ".join(errors))
    return elapsed


def _measure_copy(hosts: TestHosts, folder: Path, size: int, tiny: Path, mib: int) -> dict[str, Any]:
    """On the hosts of ``size`` (the tiny model deployed): the same ``mib`` MiB file to the same hosts and folder by
    scp, rsync and paramiko; then a deploy where only the model changed, to that file, its copy step timed."""
    names = [f"h{i}" for i in range(1, size + 1)]
    log, timing = folder / "calls.jsonl", folder / "timing.jsonl"
    big = _large_model(tiny, folder, mib)
    _read(big)  # every copy reads it from the page cache (rbee's deploy hashes it on this machine first)
    spec = _spec(folder / f"cluster-{size}-copy.yaml", names, big, "copy", folder / "models")
    key = Paths.default().key
    dest = posixpath.join(HostLayout(load_spec(spec).deploy.prefix).models, ".bench-copy.gguf")  # same filesystem
    plain: dict[str, float | None] = {}
    sync_after: dict[str, float] = {}
    rsync_skipped = _rsync_missing(hosts, names[0])
    tools = [("scp", _scp), ("paramiko_sftp", _paramiko)]
    if rsync_skipped is None:
        tools.insert(1, ("rsync", _rsync))
    else:
        plain["rsync"] = None
    runs: dict[str, list[float]] = {}
    for tool, copy in tools:
        for _ in range(2 if tool != "paramiko_sftp" else 1):  # the best of 2: a first run can be 2-4x slower
            _sync()
            runs.setdefault(tool, []).append(round(copy(key, names, big, dest), 2))
            sync_after[tool] = round(_sync(), 2)  # the same bytes made durable (rbee fsyncs before its rename)
            _remote_rm(key, names, dest)
        plain[tool] = min(runs[tool])
    _sync()  # the plain copies first: after the deploy, its new workers and hives are still starting
    deploy = _deploy(spec, log, timing)
    step = copy_step(_timed_calls(timing), "copy")
    scp_s = plain["scp"] or 0.0
    moved_mib = mib * size
    return {
        "hosts": size,
        "file_mib": mib,
        "deploy_s": round(deploy.seconds, 2),
        "rbee_copy_s": step["copy_s"],
        "rbee_transfer_s": step["transfer_s"],
        "rbee_finish_s": step["finish_s"],
        "rbee_per_host": step["per_host"],
        "scp_s": plain["scp"],
        "plain_runs_s": runs,
        "rsync_s": plain["rsync"],
        "rsync_skipped": rsync_skipped,
        "paramiko_sftp_s": plain["paramiko_sftp"],
        "sync_after_s": sync_after,
        "rbee_vs_scp": round(step["copy_s"] / scp_s, 2),
        "rbee_transfer_vs_scp": round(step["transfer_s"] / scp_s, 2),
        "rbee_vs_rsync": round(step["copy_s"] / plain["rsync"], 2) if plain["rsync"] else None,
        "mib_per_s": {
            "rbee_copy": round(moved_mib / step["copy_s"], 1),
            "rbee_transfer": round(moved_mib / step["transfer_s"], 1),
            "scp": round(moved_mib / scp_s, 1),
            "paramiko_sftp": round(moved_mib / (plain["paramiko_sftp"] or 1.0), 1),
        },
    }


def _print_copies(copies: list[dict[str, Any]]) -> None:
    if not copies:
        return
    print(
        f"model copy ({copies[0]['file_mib']} MiB to every host, in parallel; rbee = the deploy step: one ssh "
        "stream per host, hashed as written, fsync + rename + stamp; or SFTP, then the check + fsync + rename)"
    )
    print("hosts  rbee copy  (transfer  finish)  scp      rsync    paramiko SFTP  rbee/scp  transfer/scp")
    for c in copies:
        rsync = f"{c['rsync_s']:>5.1f} s" if c["rsync_s"] is not None else "    —  "
        print(
            f"{c['hosts']:>5}  {c['rbee_copy_s']:>7.1f} s  "
            f"({c['rbee_transfer_s']:>6.1f} s  {c['rbee_finish_s']:>4.1f} s)  "
            f"{c['scp_s']:>5.1f} s  {rsync}  {c['paramiko_sftp_s']:>11.1f} s  {c['rbee_vs_scp']:>7.2f}×  "
            f"{c['rbee_transfer_vs_scp']:>11.2f}×"
        )
    if copies[0]["rsync_skipped"]:
        print(f"rsync skipped: {copies[0]['rsync_skipped']}")


def _print(rows: list[dict[str, Any]], large: dict[str, Any] | None, ansible: dict[int, float]) -> None:
    print("hosts  first deploy  calls/host  no-op    calls/host  bare no-op  no-op/bare  bare calls/host")
    for r in rows:
        calls = max(r["first_deploy_calls_per_host"].values())
        noop_calls = max(r["noop_calls_per_host"].values())
        bare_calls = max(r["bare_noop_calls_per_host"].values())
        print(
            f"{r['hosts']:>5}  {r['first_deploy_s']:>10.1f} s  {calls:>10}  {r['noop_s']:>5.1f} s  {noop_calls:>10}  "
            f"{r['bare_noop_s']:>8.1f} s  {r['noop_vs_bare']:>10.2f}  {bare_calls:>15}"
        )
    base = rows[0]
    for r in rows[1:]:
        added = r["hosts"] - base["hosts"]
        per_added = (r["noop_s"] - base["noop_s"]) / added
        print(f"{r['hosts']} hosts vs {base['hosts']}: no-op {per_added:+.2f} s per added host")
    if large:
        print(
            f"large model ({large['model_mib']} MiB) on {large['hosts']} host(s): "
            f"first deploy {large['first_deploy_s']:.1f} s, no-op {large['noop_s']:.1f} s "
            f"vs the tiny model's {large['tiny_noop_s']:.1f} s (×{large['noop_vs_tiny']:.2f}), "
            f"commands hashing a model in its no-op: {len(large['noop_hashing_commands'])}"
        )
    for size, seconds in ansible.items():
        print(f"ansible no-op on {size} host(s): {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs per size (the median is reported)")
    parser.add_argument("--large-mib", type=int, default=1024, help="the large model's size (0: skip)")
    parser.add_argument("--ansible", action="store_true", help="also time an ansible no-op on the same hosts")
    parser.add_argument(
        "--copy-mib", type=int, default=0, help="on every size, time a model copy of this many MiB vs scp (0: skip)"
    )
    parser.add_argument(
        "--json", type=Path, help="where the figures go (default bench/results/deploy-DATE-COMMIT.json)"
    )
    args = parser.parse_args()
    charts.require_matplotlib("python -m bench.deploy")  # before minutes of work
    sizes = [int(s) for s in args.sizes.split(",")]
    features = local_feature_set("cpu", "0.3.36")
    started = time.perf_counter()
    was_cached = cached_wheel(features) is not None
    build_wheel(features)
    engine_s = time.perf_counter() - started
    model = ensure_tiny_model()
    hosts = TestHosts()
    rows: list[dict[str, Any]] = []
    large: dict[str, Any] | None = None
    ansible: dict[int, float] = {}
    copies: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rbee-bench-deploy-") as tmp, hosts.session_lease():
        folder = Path(tmp)  # the lease: a test session waits for the bench to end, and the other way round
        try:
            for size in sizes:
                rows.append(_measure_size(hosts, folder, size, model, args.noop_runs))
                print(json.dumps(rows[-1]), flush=True)
                if args.ansible:
                    inventory = folder / f"inventory-{size}.yml"
                    _ansible(Path(rows[-1]["spec"]), inventory)  # ansible converges what pyinfra deployed
                    ansible[size] = _ansible(Path(rows[-1]["spec"]), inventory)
                if size == sizes[0] and args.large_mib:
                    large = _measure_large(folder, size, model, args.large_mib, args.noop_runs)
                    print(json.dumps(large), flush=True)
                if args.copy_mib:
                    copies.append(_measure_copy(hosts, folder, size, model, args.copy_mib))
                    print(json.dumps(copies[-1]), flush=True)
        finally:
            hosts.down()
    print(f"engine {features.key}: {'cached' if was_cached else f'built in {engine_s:.0f} s'} (not in the figures)")
    _print(rows, large, ansible)
    _print_copies(copies)
    target = args.json or RESULTS / f"deploy-{datetime.now(UTC):%Y%m%d-%H%M}-{_commit()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": "deploy", "commit": _commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "sizes": rows, "large_model": large, "ansible_noop_s": ansible, "model_copy": copies,
                "cores": os.cpu_count()}  # fmt: skip
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"figures written to {target}, their chart to {charts.deploy_chart(document, target.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
