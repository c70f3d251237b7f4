"""Release history on the real test hosts: three deploys of different placements, ``rbee rollback --to`` the first
under a client streaming chat completions the whole time, ``rbee releases``, keep-N pruning, refused rollbacks.

h1: queen + hive, h2/h3: a worker of ``tiny`` each; the placements differ by the workers' slots (2, 3, 4), which the
queen's ``GET /v1/workers`` shows (``slots_total``). The module deploys a copy of rbee's code taken when it starts
(``frozen_code``): the three deploys ship the same rbee even while the checkout is edited meanwhile (another rbee is
another runtime, and a rollback across it restarts every service, the queen's too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rbee.deploy.cluster_secret import state_dir
from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(1200)]  # three deploys, fresh hosts: minutes

ROOT = Path(__file__).parents[2]
RBEE = str(Path(sys.executable).parent / "rbee")
API_KEY = "sk-deploy-test"
QUEEN = "http://10.210.0.11:7833/v1"
HOSTS = ["h1", "h2", "h3"]
SLOTS = (2, 3, 4)


def write_spec(path: Path, model: Path, slots: int, keep: int = 3) -> None:
    """The spec of the placement with ``slots``; the model's sha256 pinned (as a GitOps repository would)."""
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    path.write_text(
        spec_for_hosts(
            HOSTS, cluster="deploytest", queen_host="h1",
            models_yaml=f"- {{id: tiny, source: 'file://{model}', sha256: {sha}, context: 512}}",
            placements_yaml=f"- {{model: tiny, hosts: [h2, h3], replicas: 2, slots: {slots}}}",
            extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
            "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}\n"
            f"deploy: {{keep_releases: {keep}}}",
        )
    )  # fmt: skip


def rbee(*args: str, timeout: float = 900, **more_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_TEST_KEYS": API_KEY, **more_env}
    return subprocess.run([RBEE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def deploy(spec: Path) -> str:
    """``rbee deploy``; the release it deployed."""
    done = rbee("deploy", str(spec))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = re.search(r"rbee deploy: release (\S+): ", done.stdout)
    assert found, done.stdout
    return found.group(1)


def releases(spec: Path) -> dict[str, Any]:
    listed = rbee("releases", "--json", str(spec))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    data: dict[str, Any] = json.loads(listed.stdout)
    return data


def placed_slots() -> dict[str, int]:
    """Hive → the slots of its placed worker, as the queen lists them."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    workers = httpx.get(f"{QUEEN}/workers", headers=headers, timeout=10).json()["workers"]
    return {w["hive_id"]: w["slots_total"] for w in workers if w["managed_by"] == "external"}


class ChatStreams:
    """A client streaming chat completions through the queen, back to back, for as long as it runs."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._client = openai.OpenAI(base_url=QUEEN, api_key=API_KEY, max_retries=0, timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self._client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "Bees?"}], max_tokens=24, stream=True
                )
                finish = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
                if finish:
                    self.ok += 1
                else:
                    self.failed.append("a stream without a finish_reason")
            except openai.OpenAIError as exc:
                self.failed.append(repr(exc))

    def __enter__(self) -> ChatStreams:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


@pytest.fixture(scope="module", autouse=True)
def frozen_code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """rbee's code as it is now, copied, first on ``PYTHONPATH`` of every ``rbee`` this module runs."""
    source = tmp_path_factory.mktemp("rbee-code")
    for package in ("rbee", "rbee_runtime"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(source))
        yield source


@pytest.fixture(scope="module")
def deployed(
    test_hosts: TestHosts, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, list[str]]]:
    """Three deploys, one per placement: the spec and the three release ids."""
    spec = tmp_path_factory.mktemp("releases") / "cluster.yaml"
    ids = []
    for slots in SLOTS:
        write_spec(spec, tiny_model_path, slots)
        started = time.monotonic()
        ids.append(deploy(spec))
        print(f"deploy with {slots} slots: {time.monotonic() - started:.1f}s")
    yield spec, ids


def test_each_deploy_is_a_release_kept_on_every_host_and_an_unchanged_one_is_none(
    deployed: tuple[Path, list[str]],
) -> None:
    spec, ids = deployed
    assert len(set(ids)) == 3, ids
    for host, found in releases(spec).items():
        kept = [r["id"] for r in found["releases"]]
        assert found["current"] == ids[2] and kept[:3] == ids[::-1], f"{host}: {found}"
        assert [r["current"] for r in found["releases"]] == [True] + [False] * (len(kept) - 1)
        first = found["releases"][2]
        assert first["rbee_version"] and "spec_commit" in first and first["workers"] == ([] if host == "h1" else
                                                                                       ["tiny-1"])  # fmt: skip
    before = releases(spec)
    assert deploy(spec) == ids[2]  # the same spec again: the same release, nothing kept anew
    assert releases(spec) == before
    text = rbee("releases", str(spec))
    assert text.returncode == 0 and f"* {ids[2]}" in text.stdout and "h2: 3 release(s) kept" in text.stdout


def test_rollback_to_the_first_release_serves_its_placement_with_no_failed_request(
    deployed: tuple[Path, list[str]], tiny_model_path: Path, test_hosts: TestHosts
) -> None:
    spec, ids = deployed
    assert placed_slots() == {"h2": SLOTS[2], "h3": SLOTS[2]}
    queen_pid = test_hosts.ssh("h1", "systemctl show -p MainPID --value rbee-queen").stdout
    with ChatStreams() as streams:
        started = time.monotonic()
        back = rbee("rollback", "--to", ids[0], str(spec))
        took = time.monotonic() - started
        time.sleep(1)
    print(f"rollback: {took:.1f}s, {streams.ok} chat streams")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    assert f"batch h2: healthy on {ids[0]}" in back.stdout and f"batch h3: healthy on {ids[0]}" in back.stdout
    assert streams.failed == [], streams.failed[:5]
    assert streams.ok >= 5
    assert placed_slots() == {"h2": SLOTS[0], "h3": SLOTS[0]}
    assert test_hosts.ssh("h1", "systemctl show -p MainPID --value rbee-queen").stdout == queen_pid, "queen restarted"
    assert {h: f["current"] for h, f in releases(spec).items()} == dict.fromkeys(HOSTS, ids[0])
    write_spec(spec, tiny_model_path, SLOTS[0])
    planned = rbee("plan", str(spec))
    assert planned.returncode == 0, f"the hosts hold exactly what the first spec deploys:\n{planned.stdout[-3000:]}"
    status = rbee("status", str(spec))
    assert status.returncode == 0 and status.stdout.count(f"release {ids[0]}: the spec at hand's") == 3, status.stdout


def test_older_releases_are_pruned_and_a_rollback_to_one_is_refused_before_anything_changes(
    deployed: tuple[Path, list[str]], tiny_model_path: Path, test_hosts: TestHosts
) -> None:
    spec, ids = deployed
    write_spec(spec, tiny_model_path, SLOTS[1], keep=1)
    newest = deploy(spec)
    for host, found in releases(spec).items():  # the current one and the one it came from (a failed gate's target)
        assert [r["id"] for r in found["releases"]] == [newest, ids[0]], f"{host}: {found}"
    kept_models = test_hosts.ssh("h2", "ls /opt/rbee/models/.rbee-releases").stdout.split()
    assert sorted(kept_models) == sorted([newest, ids[0]])
    refused = rbee("rollback", "--to", ids[2], str(spec))
    assert refused.returncode == 1
    for host in HOSTS:
        assert f"rbee rollback: {host}: release {ids[2]} is not kept there" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert {h: f["current"] for h, f in releases(spec).items()} == dict.fromkeys(HOSTS, newest)
    hostile = rbee("rollback", "--to", "0.1.0-aaaaaaaaaaaa;reboot", str(spec))
    assert hostile.returncode == 2 and "not a release id" in hostile.stderr


def test_a_commit_that_changes_nothing_deployed_is_no_change_and_each_release_names_the_commit_that_made_it(
    deployed: tuple[Path, list[str]], tiny_model_path: Path
) -> None:
    """The operator's repository gets commits that touch neither the spec nor rbee: ``rbee plan`` stays empty (the
    record holds no commit), and the commit that made the running release is still the one ``rbee status`` and
    ``rbee releases`` name."""
    spec, _ = deployed
    git = ["git", "-C", str(spec.parent), "-c", "user.name=ops", "-c", "user.email=ops@example.org"]

    def commit(message: str) -> str:
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", message], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    subprocess.run([*git, "init", "-q"], check=True)
    commit("the cluster as deployed")
    planned = rbee("plan", str(spec))
    assert planned.returncode == 0, f"a commit alone is no change:\n{planned.stdout[-3000:]}"
    write_spec(spec, tiny_model_path, SLOTS[2])
    made_by = commit("four slots")
    release = deploy(spec)
    (spec.parent / "README.md").write_text("Our cluster.\n")
    later = commit("docs only")
    planned = rbee("plan", str(spec))
    assert planned.returncode == 0, f"a commit that changes no input is no change:\n{planned.stdout[-3000:]}"
    for host, found in releases(spec).items():
        assert found["current"] == release, host
        assert found["releases"][0]["spec_commit"] == made_by and not found["releases"][0]["spec_dirty"], host
    status = rbee("status", str(spec))
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(f"release {release}: the spec at hand's") == 3, status.stdout
    assert status.stdout.count(f"made from spec commit {made_by[:12]}") == 3 and later[:12] not in status.stdout


def test_a_control_machine_with_empty_caches_plans_and_deploys_nothing_the_hosts_already_have(
    deployed: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A fresh CI runner: no engine wheel, no model, no wheelhouse cached (``HOME`` empty; the cluster secret is the
    operator's, as a CI secret would give it). With the model's sha256 pinned, ``rbee plan`` is exact (exit 0) and
    ``rbee deploy`` builds no engine, fetches no model and downloads no wheelhouse: the hosts keep what they have."""
    spec, _ = deployed
    home = tmp_path / "home"
    home.mkdir()
    cold = {"HOME": str(home), "RBEE_STATE_DIR": str(state_dir()), "XDG_CACHE_HOME": str(home / ".cache")}
    started = time.monotonic()
    planned = rbee("plan", str(spec), **cold)
    print(f"plan on empty caches: {time.monotonic() - started:.1f}s")
    assert planned.returncode == 0, f"a cold runner plans what the hosts have:\n{planned.stdout[-3000:]}"
    started = time.monotonic()
    again = rbee("deploy", str(spec), **cold)
    print(f"deploy on empty caches: {time.monotonic() - started:.1f}s")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    cache = home / ".cache" / "rbee"
    assert not list((cache / "wheels").glob("**/*.whl")), "no engine built"
    assert not list((cache / "models").glob("**/*.gguf")), "no model fetched"
    assert not list((cache / "wheelhouse").glob("**/*.whl")), "no wheelhouse downloaded: the hosts have it"
    assert rbee("plan", str(spec)).returncode == 0, "the warm machine agrees: nothing changed"
