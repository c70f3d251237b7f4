"""How long a deploy takes and how many remote calls it makes: first deploy and no-op, for 1, 2 and 4 hosts.

Run (as root): ``.venv/bin/python -m bench.deploy [--sizes 1,2,4] [--json PATH]``. Boots fresh test hosts
for each size (so every first deploy starts from a bare Debian), deploys the tiny model to every host with
``pyinfra inventory/inventory.py deploys/site.py`` (through ``deploys.count_commands``, which counts every
remote command and transfer per host), then re-runs it (the no-op). The baseline, on the same hosts in the
same run: a bare pyinfra deploy of 12 operations (folders and small files) and its no-op re-run; each rbee
figure is printed with its ratio to it. On the first size, the tiny model is then swapped for a large one
(a GGUF padded to ``--large-mib``; its no-op should cost what the tiny one's does: nothing is re-hashed).
``--ansible`` also times an ansible no-op on the same hosts. The engine build is excluded (cached before).
The figures go to ``bench/results/deploy-<date>-<commit>.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploys.count_commands import read_log
from rbee.engine.features import local_feature_set
from rbee.engine.wheelcache import build_wheel, cached_wheel
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


def _pyinfra(args: list[str], env: dict[str, str], log: Path) -> Run:
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "deploys.count_commands", str(log), "-y", *args]
    started = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return Run(elapsed, read_log(log))


def _deploy(spec: Path, log: Path) -> Run:
    return _pyinfra(["inventory/inventory.py", "deploys/site.py"], {"RBEE_SPEC": str(spec)}, log)


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
        "--json", type=Path, help="where the figures go (default bench/results/deploy-DATE-COMMIT.json)"
    )
    args = parser.parse_args()
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
    with tempfile.TemporaryDirectory(prefix="rbee-bench-deploy-") as tmp:
        folder = Path(tmp)
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
        finally:
            hosts.down()
    print(f"engine {features.key}: {'cached' if was_cached else f'built in {engine_s:.0f} s'} (not in the figures)")
    _print(rows, large, ansible)
    target = args.json or RESULTS / f"deploy-{datetime.now(UTC):%Y%m%d-%H%M}-{_commit()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {"commit": _commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"), "sizes": rows,
                "large_model": large, "ansible_noop_s": ansible, "cores": os.cpu_count()}  # fmt: skip
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"figures written to {target}")


if __name__ == "__main__":
    main()
