"""Rolling deploys on the real test hosts: no failed request during a rollout, rollback of a broken release.

Runs after test_deploy_hosts.py on the same hosts (h1: queen + hive, h2/h3: a placed worker each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from rbee.deploy.health import READY_STATES
from rbee.testhosts import TestHosts
from rbee.testhosts.inventory import spec_for_hosts

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RBEE = str(Path(sys.executable).parent / "rbee")
API_KEY = "sk-deploy-test"
HOSTS = ["h1", "h2", "h3"]


def write_spec(path: Path, model: Path, slots: int = 2, h2_hive_port: int | None = None) -> None:
    text = spec_for_hosts(
        HOSTS, cluster="deploytest", queen_host="h1",
        models_yaml=f"- {{id: tiny, source: 'file://{model}', context: 512}}",
        placements_yaml=f"- {{model: tiny, hosts: [h2, h3], replicas: 2, slots: {slots}}}",
        extra_yaml="queen: {api_keys: {env: RBEE_TEST_KEYS}}\n"
        "runtime: {heartbeat_interval: 1s, stale_timeout: 5s, loading_timeout: 90s}",
    )  # fmt: skip
    if h2_hive_port is not None:  # valid in the spec, fatal at start: the port is taken (sshd)
        text = text.replace("- name: h2\n", f"- name: h2\n  hive: {{port: {h2_hive_port}}}\n", 1)
    path.write_text(text)


def rbee(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_TEST_KEYS": API_KEY}
    return subprocess.run([RBEE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


class Traffic:
    """A client streaming completions through the queen for as long as it runs; counts every outcome."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._client = openai.OpenAI(base_url="http://10.210.0.11:7833/v1", api_key=API_KEY, max_retries=0, timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self._client.completions.create(model="tiny", prompt="Bees", max_tokens=24, stream=True)
                text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
                if text:
                    self.ok += 1
                else:
                    self.failed.append("empty completion")
            except openai.OpenAIError as exc:
                self.failed.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


@pytest.fixture(scope="module")
def spec(test_hosts: TestHosts, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("rollout") / "cluster.yaml"
    write_spec(path, tiny_model_path)
    first = rbee("deploy", str(path))  # converge (a no-op when test_deploy_hosts ran before)
    assert first.returncode == 0, first.stdout + first.stderr
    yield path


RECORD = "/opt/rbee/release.json"
"""Names the checkout's commit: others committing to a shared checkout while a test runs change it on every host."""


def diff_headers(text: str) -> list[str]:
    """The ``---`` line of each diff in ``text`` but the release record's."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith("--- ") and RECORD not in line]


def test_a_hand_edited_unit_shows_as_its_diff_on_its_host_until_a_deploy(spec: Path, test_hosts: TestHosts) -> None:
    unit = "/etc/systemd/system/rbee-hive.service"
    test_hosts.ssh("h2", f"echo '# edited by hand' >> {unit}", check=True)
    try:
        text = rbee("plan", str(spec))
        assert text.returncode == 3, text.stdout + text.stderr
        assert diff_headers(text.stdout) == [f"--- h2:{unit} (on the host)"], text.stdout
        h2 = text.stdout.split("\nh2: ", 1)[1].split("\nh3: ", 1)[0]
        assert f"~ unit rbee-hive.service ({unit}): update, content differs" in h2
        assert f"    --- h2:{unit} (on the host)\n    +++ h2:{unit} (planned)\n" in h2 and "    -# edited by hand" in h2
        markdown = rbee("plan", "--format", "markdown", str(spec))
        assert markdown.returncode == 3, markdown.stderr
        assert diff_headers(markdown.stdout) == [f"--- h2:{unit} (on the host)"], markdown.stdout
        h2_block = markdown.stdout.split("<details><summary><b>h2</b>", 1)[1].split("</details>", 1)[0]
        assert f"--- h2:{unit} (on the host)" in h2_block and "\n-# edited by hand\n```\n" in h2_block
        data = json.loads(rbee("plan", "--json", str(spec)).stdout)
        shown = {h: [c for c in (*v["changes"]["files"], *v["changes"]["units"]) if c["path"] != RECORD]
                 for h, v in data["hosts"].items()}  # fmt: skip
        assert {h: [c["path"] for c in changed] for h, changed in shown.items()} == {"h1": [], "h2": [unit], "h3": []}
        assert [line for line in shown["h2"][0]["diff"].splitlines()[2:] if line[:1] in "+-"] == ["-# edited by hand"]
        assert data["hosts"]["h2"]["status"] == "changes" and data["hosts"]["h2"]["changes"]["models"] == []
    finally:
        deployed = rbee("deploy", str(spec))  # puts the unit back
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "edited by hand" not in test_hosts.ssh("h2", f"cat {unit}").stdout
    again = rbee("plan", str(spec))
    assert again.returncode == 0, again.stdout + again.stderr


UNTOUCHED = (
    "echo release $(readlink /opt/rbee/releases/current) $(ls /opt/rbee/releases | wc -l); "
    "echo record $(sha256sum < /opt/rbee/release.json | cut -c1-16); "
    "for u in $(systemctl list-units --all --plain --no-legend 'rbee-*' | cut -d' ' -f1 | sort); do "
    "echo $u $(systemctl show -p ActiveEnterTimestampMonotonic --value $u); done; "
    "find /etc/rbee /etc/systemd/system /opt/rbee -path /opt/rbee/venv -prune -o -newer /run/rbee-test-mark -print"
)
"""What a host runs and since when: its current release and how many it keeps, its record, each rbee unit's last
start, every file or folder written after the mark (``/run/rbee-test-mark``)."""


def host_marks(test_hosts: TestHosts, mark: bool = False) -> dict[str, str]:
    """``UNTOUCHED`` of each host (``mark``: touch the mark first)."""
    first = "touch /run/rbee-test-mark && sleep 0.01; " if mark else ""
    return {host: test_hosts.ssh(host, first + UNTOUCHED, check=True).stdout for host in HOSTS}


RECORD_ONLY = [f"~ record: release.json ({RECORD}): update, content differs"]
"""A host's only change when this shared checkout got a commit since the last deploy (the record names it)."""


def test_the_scheduled_self_heal_puts_back_a_hand_edit_and_leaves_a_release_change_alone(
    spec: Path, tiny_model_path: Path, test_hosts: TestHosts
) -> None:
    """rbee deploy --only-drift: the drifted host alone gets its release again (no new one); a spec change that was
    not deployed is skipped (exit 3) and changes nothing.

    h1 and h3 must get nothing after the plan (no file written, no unit restarted), unless a commit to this shared
    checkout landed since the last deploy: their record then names another commit, and re-recording it is their
    heal (asserted as such)."""
    unit = "/etc/systemd/system/rbee-hive.service"
    healed = False
    try:
        test_hosts.ssh("h2", f"echo '# edited by hand' >> {unit}", check=True)
        planned = rbee("plan", str(spec))
        assert planned.returncode == 3 and diff_headers(planned.stdout) == [f"--- h2:{unit} (on the host)"]
        before = host_marks(test_hosts, mark=True)
        heal = rbee("deploy", "--only-drift", "--json", str(spec))
        assert heal.returncode == 0, heal.stdout + heal.stderr
        report, after = json.loads(heal.stdout), host_marks(test_hosts)
        found = report["hosts"]
        assert found["h2"]["status"] == "healed" and found["h2"]["recorded"] == report["release"], heal.stdout
        assert f"~ unit rbee-hive.service ({unit}): update, content differs" in found["h2"]["changes"]
        assert "batch h2: healthy" in heal.stderr and report["exit"] == 0
        for host in ("h1", "h3"):
            if found[host]["status"] == "healed":  # a commit since the last deploy: the record alone
                assert found[host]["changes"] == RECORD_ONLY, heal.stdout
                continue
            assert found[host]["status"] == "in-sync" and f"batch {host}" not in heal.stderr, heal.stdout
            assert after[host] == before[host]  # nothing written, nothing restarted
        assert after["h2"].splitlines()[0] == before["h2"].splitlines()[0]  # the same release, no new one kept
        assert "edited by hand" not in test_hosts.ssh("h2", f"cat {unit}").stdout
        again = rbee("plan", str(spec))
        assert again.returncode == 0 or diff_headers(again.stdout) == [], again.stdout  # (or a commit meanwhile)
        healed = True

        write_spec(spec, tiny_model_path, slots=3)  # merged, not deployed yet
        before = host_marks(test_hosts, mark=True)
        skipped = rbee("deploy", "--only-drift", str(spec))
        assert skipped.returncode == 3, skipped.stdout + skipped.stderr
        release = report["release"]
        for host in HOSTS:
            told = f"{host}: skipped: release change pending (runs release {release}, the spec at hand is "
            assert told in skipped.stdout, skipped.stdout
        assert skipped.stdout.rstrip().endswith("rbee deploy --only-drift: 0 healed, 0 in sync, 3 skipped, 0 failed")
        assert host_marks(test_hosts) == before
    finally:
        write_spec(spec, tiny_model_path)  # the spec the hosts run, for the tests after this one
        if not healed:
            rbee("deploy", str(spec))


def test_a_changed_placement_rolls_out_without_a_failed_request(spec: Path, tiny_model_path: Path) -> None:
    write_spec(spec, tiny_model_path, slots=3)
    planned = rbee("plan", str(spec))
    assert planned.returncode == 3 and "~ worker tiny-1 config (" in planned.stdout, planned.stdout
    with Traffic() as traffic:
        rolled = rbee("deploy", str(spec))
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "batch h1: healthy" in rolled.stdout and "batch h3: healthy" in rolled.stdout
    assert traffic.failed == [], traffic.failed[:5]
    assert traffic.ok >= 5
    assert rbee("plan", str(spec)).returncode == 0


def test_a_release_whose_hive_cannot_start_is_rolled_back(
    spec: Path, tiny_model_path: Path, test_hosts: TestHosts
) -> None:
    h3_before = test_hosts.ssh("h3", "cat /opt/rbee/release.json").stdout
    write_spec(spec, tiny_model_path, slots=3, h2_hive_port=22)
    broken = rbee("deploy", "--gate-timeout", "25", str(spec))
    assert broken.returncode == 1
    assert "rbee deploy: failed on h2: " in broken.stderr and "hive h2" in broken.stderr
    assert "h2 rolled back and serving the previous release; untouched: h3" in broken.stderr
    told = broken.stderr.split("\nh2:\n", 1)[-1]  # the failed host's report: its units and their journal
    assert "\n  unit rbee-hive.service: " in "\n" + told and " rbee-hive[" in told, broken.stderr
    assert test_hosts.ssh("h3", "cat /opt/rbee/release.json").stdout == h3_before
    assert "--port 7835" not in test_hosts.ssh("h2", "cat /etc/rbee/hive.yaml").stdout
    assert "port: 7835" in test_hosts.ssh("h2", "cat /etc/rbee/hive.yaml").stdout
    headers = {"Authorization": f"Bearer {API_KEY}"}
    workers = httpx.get("http://10.210.0.11:7833/v1/workers", headers=headers, timeout=10).json()["workers"]
    # The placed workers (systemd units: managed_by external; a hive may also have spawned one on demand while the
    # rollout restarted them), ready as the gate means it (idle or busy), not "idle": the gate's own completion
    # leaves a worker busy in the queen's view until the hive's next health check and its next heartbeat.
    ready = {str(state) for state in READY_STATES}
    placed = [w["hive_id"] for w in workers if w["managed_by"] == "external" and w["state"] in ready]
    assert sorted(placed) == ["h2", "h3"], workers
    write_spec(spec, tiny_model_path, slots=3)
    status = json.loads(rbee("status", "--json", str(spec)).stdout)
    assert set(status) == set(HOSTS)
