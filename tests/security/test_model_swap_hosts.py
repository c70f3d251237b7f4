"""A model changed and redeployed under clients streaming from its workers: no SIGBUS, no torn stream.

On the real test hosts (h1: queen + hive, h2/h3: a worker of ``tiny`` each): clients stream long
completions through the queen back to back while ``rbee deploy`` rolls out a new version of the model
file. The deploy writes the new file beside the old one and renames it over it (``rbee/deploys/atomic.py``):
the path gets a new inode, the running worker keeps reading its mapping of the old one until it drains
and restarts, and then maps the new file. A rolled-back release puts the previous model bytes back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts
from rbee.tiny_model import write_tiny_model

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RBEE = str(Path(sys.executable).parent / "rbee")
API_KEY = "sk-swap-test"
QUEEN = "http://10.210.0.11:7833/v1"
HOSTS = ["h1", "h2", "h3"]
WORKER_HOSTS = ["h2", "h3"]
MODEL = "/opt/rbee/models/tiny.gguf"
WORKER = "rbee-worker@tiny-1.service"
STREAM_TOKENS = 1500


@dataclass
class Cluster:
    hosts: TestHosts
    spec: Path
    model: Path
    cache: Path

    def write(self, h2_hive_port: int | None = None) -> None:
        text = spec_for_hosts(
            HOSTS, cluster="swaptest", queen_host="h1",
            models_yaml=f"- {{id: tiny, source: 'file://{self.model}', context: 4096}}",
            placements_yaml="- {model: tiny, hosts: [h2, h3], replicas: 2, slots: 2}",
            extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
            f"deploy: {{model_cache: '{self.cache}'}}\n"
            "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}",
        )  # fmt: skip
        if h2_hive_port is not None:  # valid in the spec, fatal at start: the port is taken (sshd)
            text = text.replace("- name: h2\n", f"- name: h2\n  hive: {{port: {h2_hive_port}}}\n", 1)
        self.spec.write_text(text)

    def deploy(self, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """``rbee deploy`` (rolling, gated, rolled back on failure); its result and its wall time."""
        env = {**os.environ, "RBEE_TEST_KEYS": API_KEY}
        started = time.monotonic()
        run = subprocess.run(
            [RBEE, "deploy", *args, str(self.spec)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        return run, time.monotonic() - started

    def sh(self, host: str, command: str) -> str:
        done = self.hosts.ssh(host, command)
        assert done.returncode == 0, f"{host}: {command}: {done.stderr}"
        return done.stdout.strip()

    def model_state(self, host: str) -> ModelState:
        """The model file's inode and sha256 on ``host``, and the inodes its worker has mapped."""
        inode, sha = self.sh(host, f"stat -c %i {MODEL} && sha256sum {MODEL} | cut -c1-64").split()
        pid = self.sh(host, f"systemctl show -p MainPID --value {WORKER}")
        maps = self.sh(host, f"grep -F {MODEL} /proc/{pid}/maps || true")
        return ModelState(int(inode), sha, int(pid), {int(line.split()[4]) for line in maps.splitlines()})

    def swapped_at(self, host: str) -> float:
        """When the model file got its current inode (its ctime: the rename; the hosts share this clock)."""
        return float(self.sh(host, f"python3 -c 'import os; print(os.stat(\"{MODEL}\").st_ctime)'"))


@dataclass(frozen=True)
class ModelState:
    inode: int
    sha256: str
    worker_pid: int
    mapped: set[int]


@dataclass
class Streams:
    """Clients streaming long completions through the queen, back to back, until stopped."""

    clients: int = 2
    done: list[tuple[float, float, str | None]] = field(default_factory=list)  # start, end, finish_reason
    torn: list[str] = field(default_factory=list)  # broke after its first chunk, or ended without a finish_reason
    refused: list[str] = field(default_factory=list)  # refused before any chunk
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        client = openai.OpenAI(base_url=QUEEN, api_key=API_KEY, max_retries=0, timeout=120)
        while not self._stop.is_set():
            started, reason, text = time.time(), None, []
            try:
                stream = client.completions.create(model="tiny", prompt="Bees", max_tokens=STREAM_TOKENS, stream=True)
                for chunk in stream:
                    for choice in chunk.choices:
                        text.append(choice.text)
                        reason = choice.finish_reason or reason
                if reason is None or not "".join(text):
                    self.torn.append(f"stream ended without a finish_reason after {len(text)} chunks")
                else:
                    self.done.append((started, time.time(), reason))
            except openai.OpenAIError as exc:
                (self.torn if text else self.refused).append(f"{exc!r} after {len(text)} chunks")

    def __enter__(self) -> Streams:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)

    def running_at(self, moment: float) -> int:
        return sum(1 for start, end, _ in self.done if start < moment < end)


def completion() -> str:
    client = openai.OpenAI(base_url=QUEEN, api_key=API_KEY, max_retries=0, timeout=60)
    return client.completions.create(model="tiny", prompt="Bees", max_tokens=16, temperature=0).choices[0].text


def signals_in_journal(cluster: Cluster, host: str, since: float) -> list[str]:
    """Lines of the worker's journal since ``since`` that tell of a death by signal (SIGBUS among them)."""
    journal = cluster.sh(host, f"journalctl -u {WORKER} --since @{int(since)} --no-pager -o cat")
    bad = ("code=killed", "code=dumped", "SIGBUS", "status=7/BUS", "core dumped")
    return [line for line in journal.splitlines() if any(b in line for b in bad)]


@pytest.fixture(scope="module")
def cluster(test_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("swap")
    model = write_tiny_model(folder / "tiny.gguf", seed=0)
    made = Cluster(test_hosts, folder / "cluster.yaml", model, folder / "cache")
    made.write()
    for host in HOSTS:  # another test module's cluster on these hosts: its record would (rightly) stop this deploy
        made.sh(host, "rm -f /opt/rbee/applied-hosts.json")
    first, took = made.deploy()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(f"first deploy: {took:.1f}s")
    yield made


def test_a_model_swapped_under_streaming_clients_tears_nothing(cluster: Cluster) -> None:
    before = {h: cluster.model_state(h) for h in WORKER_HOSTS}
    for host, state in before.items():
        assert state.mapped == {state.inode}, f"{host}: the worker maps {state.mapped}, the file is {state.inode}"
    old_text = completion()
    since = time.time()
    write_tiny_model(cluster.model, seed=1)  # a new version of the model file on the control machine
    new_sha = hashlib.sha256(cluster.model.read_bytes()).hexdigest()

    with Streams() as streams:
        time.sleep(2)  # the streams are running before the deploy starts
        rolled, took = cluster.deploy()
        time.sleep(1)
    print(
        f"redeploy under streams: {took:.1f}s, {len(streams.done)} streams of {STREAM_TOKENS} tokens, "
        f"refused: {streams.refused}"
    )

    assert rolled.returncode == 0, rolled.stdout[-3000:] + rolled.stderr[-3000:]
    assert "batch h2: healthy" in rolled.stdout and "batch h3: healthy" in rolled.stdout
    assert streams.torn == [], streams.torn[:5]
    # a request opened while a worker drains goes to another worker (tests/queen/test_draining_failover.py)
    assert streams.refused == [], streams.refused[:5]
    assert {reason for *_, reason in streams.done} == {"length"}
    after = {h: cluster.model_state(h) for h in WORKER_HOSTS}
    for host in WORKER_HOSTS:
        old, new = before[host], after[host]
        assert signals_in_journal(cluster, host, since) == [], f"{host}: a worker died by a signal"
        assert cluster.sh(host, f"systemctl show -p Result,NRestarts --value {WORKER}").split() == ["success", "0"]
        assert new.inode != old.inode, f"{host}: the model file was rewritten in place"
        assert new.sha256 == new_sha and new.worker_pid != old.worker_pid
        assert new.mapped == {new.inode}, f"{host}: the restarted worker maps {new.mapped}, not the new file"
        kept = cluster.sh(host, f"find /opt/rbee/models/.rbee-releases -name tiny.gguf -inum {old.inode}")
        assert kept, f"{host}: the previous model is not kept for a rollback (rbee releases)"
        swapped = cluster.swapped_at(host)
        assert streams.running_at(swapped) >= 1, f"{host}: no stream was running when the model was swapped"
        leftovers = cluster.sh(host, "find /opt/rbee/models /etc/rbee /etc/systemd/system -name '.*.rbee-tmp-*'")
        assert leftovers == ""
    assert completion() != old_text, "the workers still generate with the old weights"


def test_a_rolled_back_release_puts_the_previous_model_bytes_back(cluster: Cluster) -> None:
    before = {h: cluster.model_state(h) for h in WORKER_HOSTS}
    serving = completion()
    write_tiny_model(cluster.model, seed=2)
    cluster.write(h2_hive_port=22)
    try:
        broken, _ = cluster.deploy("--gate-timeout", "25")
        assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-3000:]
        assert "h2 rolled back and serving the previous release" in broken.stderr
        h2, h3 = cluster.model_state("h2"), cluster.model_state("h3")
        assert (h2.inode, h2.sha256) == (before["h2"].inode, before["h2"].sha256), "h2's model is not the previous one"
        assert h2.mapped == {h2.inode}
        assert h3 == before["h3"], "h3 was not to be touched"
        assert completion() == serving
    finally:
        write_tiny_model(cluster.model, seed=1)
        cluster.write()
