"""How long a deploy takes: first deploy and no-op re-run, for 1, 2 and 4 hosts; pyinfra vs ansible.

Run (as root): ``.venv/bin/python -m bench.deploy [--sizes 1,2,4]``. Boots fresh test hosts for each
size (so every first deploy starts from a bare Debian), deploys the tiny model to every host with
``pyinfra inventory/inventory.py deploys/site.py``, then deploys again; then converges the same hosts
with the ansible roles once and times an ansible no-op re-run, so both tools' no-op runs are compared
on the same hosts in the same run. The engine build is excluded from the first deploy (it is cached
per feature set before the timings) and reported apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rbee.engine.features import local_feature_set
from rbee.engine.wheelcache import build_wheel, cached_wheel
from rbee.testhosts import TestHosts, spec_for_hosts
from rbee.tiny_model import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")


def _deploy(spec: Path) -> float:
    started = time.perf_counter()
    run = subprocess.run(
        [PYINFRA, "-y", "inventory/inventory.py", "deploys/site.py"],
        cwd=ROOT, env={**os.environ, "RBEE_SPEC": str(spec)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"deploy failed:\n{run.stderr[-3000:]}")
    return elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    features = local_feature_set("cpu", "0.3.36")
    started = time.perf_counter()
    was_cached = cached_wheel(features) is not None
    build_wheel(features)
    engine_s = time.perf_counter() - started
    model = ensure_tiny_model()
    hosts = TestHosts()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rbee-bench-deploy-") as tmp:
        try:
            for size in sizes:
                hosts.down()
                names = [f"h{i}" for i in range(1, size + 1)]
                hosts.up(size)
                spec = Path(tmp) / f"cluster-{size}.yaml"
                spec.write_text(spec_for_hosts(
                    names, cluster="bench", queen_host="h1",
                    models_yaml=f"- {{id: tiny, source: 'file://{model}', context: 512}}",
                    placements_yaml=f"- {{model: tiny, replicas: {size}}}",
                    extra_yaml="runtime: {heartbeat_interval: 1s, stale_timeout: 5s}",
                ))  # fmt: skip
                first = _deploy(spec)
                again = _deploy(spec)
                inventory = Path(tmp) / f"inventory-{size}.yml"
                _ansible(spec, inventory)  # ansible converges what pyinfra deployed
                ansible_again = _ansible(spec, inventory)
                rows.append((size, first, again, ansible_again))
                print(f"{size} host(s): first deploy {first:6.1f} s, no-op re-run {again:5.1f} s, "
                      f"ansible no-op {ansible_again:5.1f} s", flush=True)  # fmt: skip
        finally:
            hosts.down()
    print(f"engine {features.key}: {'cached' if was_cached else f'built in {engine_s:.0f} s'} (not in the figures)")
    print("hosts  pyinfra first  pyinfra no-op  ansible no-op  ansible/pyinfra no-op")
    for size, first, again, ansible_again in rows:
        print(
            f"{size:>5}  {first:>11.1f} s  {again:>11.1f} s  {ansible_again:>11.1f} s  {ansible_again / again:>10.2f}"
        )
    base = rows[0]
    for size, first, again, _ in rows[1:]:
        print(f"{size} hosts vs {base[0]}: first ×{first / base[1]:.2f}, no-op ×{again / base[2]:.2f}")


if __name__ == "__main__":
    main()
