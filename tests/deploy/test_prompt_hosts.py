"""A deploy that asks first fetches and builds nothing before the answer (a real test host, h4, booted for this file).

``pyinfra inventory/inventory.py deploys/site.py`` without ``-y`` makes every operation, shows the changes and asks
to go on. The spec's model is not in its (empty) model cache and its engine is not in its (empty) build cache:
answered "n", and with ``--dry`` or ``rbee plan``, the run leaves both caches as they were and the host untouched,
having said what it would fetch and build. Confirmed (Enter), it fetches the model, then deploys the host, which
serves; a ``-y`` run after it fetches what the cache lacks before it plans, and changes nothing on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rbee.deploys.count_commands import per_host, read_log
from rbee.engine.features import local_feature_set
from rbee.engine.wheelcache import DEFAULT_CACHE, cached_wheel
from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from tests.hosts.plugin import session_layout

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RBEE_BIN = Path(sys.executable).parent
API_KEY = "sk-prompt-test"
HOST = "h4"  # a host of its own: the others keep what the other deploy tests put there
QUEEN = "http://10.210.0.14:7833"
ENGINE_VERSION = "0.3.36"


@dataclass
class Setup:
    """The spec over h4 and its two cache folders (``deploy.model_cache``, ``deploy.build_cache``)."""

    hosts: TestHosts
    spec: Path
    models: Path
    engines: Path

    def run(self, *args: str, answer: str = "", log: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``pyinfra ARGS inventory/inventory.py deploys/site.py`` as an operator types it, ``answer`` on stdin."""
        env = {**os.environ, "RBEE_SPEC": str(self.spec), "RBEE_TEST_KEYS": API_KEY}
        counted = [sys.executable, "-m", "rbee.deploys.count_commands", str(log)]
        pyinfra = counted if log else [str(RBEE_BIN / "pyinfra")]
        return subprocess.run([*pyinfra, *args, "inventory/inventory.py", "deploys/site.py"], cwd=ROOT, env=env,
                              input=answer, capture_output=True, text=True, timeout=900, check=False)  # fmt: skip

    def untouched(self) -> None:
        """Nothing fetched or built on this machine, nothing made on the host."""
        assert not self.models.exists() or not any(self.models.iterdir()), list(self.models.iterdir())
        assert not any(self.engines.iterdir()), list(self.engines.iterdir())
        assert self.hosts.ssh(HOST, "test -e /opt/rbee || echo absent").stdout.strip() == "absent"


@pytest.fixture(scope="module")
def setup(test_hosts: TestHosts, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("prompt")
    engines = folder / "engines"
    engines.mkdir()
    spec = folder / "cluster.yaml"
    spec.write_text(spec_for_hosts(
        [HOST], cluster="prompttest", queen_host=HOST,
        models_yaml=f"- {{id: tiny, source: 'file://{tiny_model_path}', context: 512}}",
        placements_yaml=f"- {{model: tiny, hosts: [{HOST}]}}",
        extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
        "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}\n"
        f"deploy: {{model_cache: {folder / 'models'}, build_cache: {engines}}}",
    ))  # fmt: skip
    count, _ = session_layout()
    test_hosts.up(4)  # h4 boots with a fresh disk; h1..h3 are left alone
    try:
        yield Setup(test_hosts, spec, folder / "models", engines)
    finally:
        if count < 4:
            test_hosts.remove(HOST)


def test_answered_no_it_fetches_and_builds_nothing(setup: Setup) -> None:
    declined = setup.run(answer="n\n")
    assert declined.returncode == 0, declined.stderr[-4000:]
    assert "Detected changes displayed above" in declined.stderr and "Unexpected user input: n" in declined.stderr
    assert f"{HOST}: after the confirmation (never in a dry run): fetch model tiny (file://" in declined.stderr
    assert "; build engine 0.3.36-cpu-" in declined.stderr and "(here)" in declined.stderr
    assert "models: tiny (to fetch from file://" in declined.stderr  # the changes shown: what the deploy would do
    setup.untouched()


def test_dry_run_and_rbee_plan_fetch_and_build_nothing(setup: Setup) -> None:
    dry = setup.run("--dry")
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "fetch model tiny" in dry.stderr
    env = {**os.environ, "RBEE_TEST_KEYS": API_KEY}
    planned = subprocess.run([str(RBEE_BIN / "rbee"), "plan", str(setup.spec)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert planned.returncode == 3, planned.stdout + planned.stderr  # changes pending
    setup.untouched()


def test_confirmed_it_fetches_then_deploys(setup: Setup) -> None:
    """Enter at the prompt: the model is fetched then, the host planned again and deployed; it serves."""
    features = local_feature_set("cpu", ENGINE_VERSION)  # h4 runs the control machine's Debian and Python
    built = cached_wheel(features, DEFAULT_CACHE)
    assert built is not None, f"no engine {features.key} in {DEFAULT_CACHE} (scripts/bootstrap.sh builds it)"
    shutil.copytree(built.parent, setup.engines / features.key)  # an engine build here takes ~8 min on 2 cores
    confirmed = setup.run(answer="\n")
    assert confirmed.returncode == 0, confirmed.stderr[-4000:]
    assert "Press enter to execute" in confirmed.stderr
    assert (setup.models / "tiny.gguf").is_file()
    assert "rbee cluster at" in confirmed.stderr  # the health gate passed: the queen sees the hive and its worker
    headers = {"Authorization": f"Bearer {API_KEY}"}
    workers = httpx.get(f"{QUEEN}/v1/workers", headers=headers, timeout=10).json()["workers"]
    assert [(w["hive_id"], w["managed_by"]) for w in workers] == [(HOST, "external")], workers


def test_with_y_it_fetches_first_and_finds_the_host_deployed(setup: Setup, tmp_path: Path) -> None:
    """-y does the slow work while planning (the model, fetched again into the emptied cache); the confirmed run left
    the host as a -y deploy does: one command, the preflight, and nothing after it."""
    for leftover in setup.models.iterdir():
        leftover.unlink()
    log = tmp_path / "calls.jsonl"
    again = setup.run("-y", log=log)
    assert again.returncode == 0, again.stderr[-4000:]
    assert (setup.models / "tiny.gguf").is_file()
    assert per_host(read_log(log)) == {HOST: 1}, [c["text"][:200] for c in read_log(log)]
