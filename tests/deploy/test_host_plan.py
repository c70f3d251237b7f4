"""The typed host plan: one place decides workers, ports, devices, requirements, files and restart inputs.

The front ends translate it: ``rbee up`` writes exactly the plan's files (checked here); the pyinfra
deploy and the Ansible roles put exactly the plan's files on real hosts (``tests/host_state``,
run after both); the Ansible helper gives the same plan as JSON (``tests/ansible/test_inventory.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rbee.deploy.host_plan import (
    DISK_MARGIN_BYTES,
    MODEL_RAM_FACTOR,
    cuda_device,
    plan_deployed_host,
    plan_host,
)
from rbee.deploy.probe import parse_probe
from rbee.local.plan import local_facts, local_target, plan_local
from rbee.spec import parse_spec
from rbee_runtime.common.credentials import hive_credential, worker_credential

PROBE = "os=Linux\narch=x86_64\npython=3.11.2\npython_venv=yes\nram_total_kb=8000000\nsystemd=yes\nprobe=done\n"
GPUS = "gpu=0, NVIDIA L4, 23034, 22000, 8.9\ngpu=1, NVIDIA L4, 23034, 22000, 8.9\n"
SPEC = """cluster: t
queen: {host: a}
hosts:
  - {name: a, address: 10.0.0.1}
  - {name: b, address: 10.0.0.2, backend: cuda, gpus: [0, 1]}
models:
  - {id: m, source: 'file:///m.gguf', context: 1024}
  - {id: n, source: 'file:///n.gguf', context: 4096}
placements:
  - {model: m, hosts: [b], slots: 2}
  - {model: n, hosts: [b], device: 'cuda:1'}
  - {model: m, hosts: [a]}
"""


def _plan(name: str, probe: str = PROBE, keys: str | None = None, sizes: dict[str, int] | None = None,
          secret: str | None = None):  # fmt: skip
    return plan_deployed_host(parse_spec(SPEC, "cluster.yaml"), name, parse_probe(probe), sizes, keys, secret)


SECRET = "5e" * 32


def test_workers_ports_and_devices() -> None:
    plan = _plan("b", PROBE + GPUS)
    assert plan.backend == "cuda" and plan.gpu_indices == (0, 1) and plan.features.gpu_offload
    assert [(w.name, w.worker_id, w.port, w.slots, w.device_index, w.unit) for w in plan.workers] == [
        ("m-1", "b-m-1", 7840, 2, 0, "rbee-worker@m-1.service"),
        ("n-1", "b-n-1", 7841, 1, 1, "rbee-worker@n-1.service"),
    ]
    hive = yaml.safe_load(plan.file("/etc/rbee/hive.yaml").text)
    assert hive["devices"] == [0, 1] and hive["worker_port_first"] == 7842 and hive["placements"] == []
    assert "--device 1 " in plan.file("/etc/rbee/workers/n-1.env").text
    assert "DeviceAllow=/dev/nvidia1 rw" in plan.file("/etc/systemd/system/rbee-worker@.service").text
    assert cuda_device("cuda:1", "all") == 1 and cuda_device("auto", [2, 3]) == 2 and cuda_device("auto", "all") == 0


def test_the_queen_host_gets_the_queen_and_its_keys_as_a_secret() -> None:
    plan = _plan("a", keys="sk-1\n")
    assert plan.is_queen and plan.units == ("rbee-queen.service", "rbee-hive.service", "rbee-worker@.service")
    keys = plan.file("/etc/rbee/credentials/api-keys")
    assert keys.secret and keys.text == "sk-1\n" and (keys.mode, keys.owner) == ("600", "root")
    # systemd hands the queen its keys (LoadCredential=): the file stays root's, the queen reads its own copy
    queen = yaml.safe_load(plan.file("/etc/rbee/queen.yaml").text)
    assert queen["api_keys_file"] == "${CREDENTIALS_DIRECTORY}/api-keys"
    unit = plan.file("/etc/systemd/system/rbee-queen.service")
    assert unit.mode == "644" and "LoadCredential=api-keys:/etc/rbee/credentials/api-keys\n" in unit.text
    assert not _plan("b").is_queen and all("queen" not in f.path for f in _plan("b").files)


def test_each_host_gets_only_its_own_credentials() -> None:
    queen_host, other = _plan("a", keys="sk-1\n", secret=SECRET), _plan("b", secret=SECRET)
    secrets = {f.path: f for f in queen_host.files if f.secret}
    assert set(secrets) == {
        "/etc/rbee/credentials/api-keys", "/etc/rbee/credentials/cluster-secret",
        "/etc/rbee/credentials/hive.credential", "/etc/rbee/credentials/worker.credential",
    }  # fmt: skip
    assert all((f.mode, f.owner) == ("600", "root") for f in secrets.values())
    assert secrets["/etc/rbee/credentials/cluster-secret"].text == SECRET + "\n"
    assert secrets["/etc/rbee/credentials/hive.credential"].text == hive_credential(SECRET, "a") + "\n"
    mine = {f.path: f.text for f in other.files if f.secret}
    assert mine == {
        "/etc/rbee/credentials/hive.credential": hive_credential(SECRET, "b") + "\n",
        "/etc/rbee/credentials/worker.credential": worker_credential(hive_credential(SECRET, "b")) + "\n",
    }
    assert SECRET not in "".join(f.text for f in other.files)  # a hive host never holds the cluster secret
    queen = yaml.safe_load(queen_host.file("/etc/rbee/queen.yaml").text)
    assert queen["cluster_secret_file"] == "${CREDENTIALS_DIRECTORY}/cluster-secret"
    hive = yaml.safe_load(other.file("/etc/rbee/hive.yaml").text)
    assert hive["credential_file"] == "${CREDENTIALS_DIRECTORY}/hive.credential"
    units = {f.path.rsplit("/", 1)[1]: f.text for f in queen_host.files if f.path.startswith("/etc/systemd/")}
    assert "LoadCredential=cluster-secret:/etc/rbee/credentials/cluster-secret" in units["rbee-queen.service"]
    assert "DynamicUser=yes" in units["rbee-queen.service"] and "User=rbee\n" not in units["rbee-queen.service"]
    assert "LoadCredential=hive.credential:/etc/rbee/credentials/hive.credential" in units["rbee-hive.service"]
    assert "--credential-file %d/worker.credential" in units["rbee-worker@.service"]
    assert all("Restart=always" in text and "MemoryMax=" in text for text in units.values())
    # a new secret restarts every service; no credential ever shows in a config or a unit
    before = {s.unit: s.digest("r", {"m": "x", "n": "y"}) for s in other.services}
    after = {s.unit: s.digest("r", {"m": "x", "n": "y"}) for s in _plan("b", secret="6f" * 32).services}
    assert all(before[u] != after[u] for u in before)
    assert not any(hive_credential(SECRET, "b") in f.text for f in other.files if not f.secret)


def test_requirements_follow_the_model_sizes() -> None:
    plan = _plan("b", sizes={"m": 2**30, "n": 2 * 2**30, "unplaced": 2**40})
    assert plan.requirements.min_ram_bytes == int(3 * 2**30 * MODEL_RAM_FACTOR) + 512 * 1024**2
    assert plan.requirements.min_disk_bytes == 3 * 2**30 + DISK_MARGIN_BYTES
    assert any("RAM 7.6 GiB < " in p for p in _plan("b", sizes={"m": 8 * 2**30}).problems)


def test_each_service_restarts_only_when_what_it_starts_from_changes() -> None:
    plan = _plan("b")
    digests = {s.unit: s.digest("release-1", {"m": "sha-m", "n": "sha-n"}) for s in plan.services}
    assert set(digests) == {"rbee-hive.service", "rbee-worker@m-1.service", "rbee-worker@n-1.service"}
    again = {s.unit: s.digest("release-1", {"m": "sha-m", "n": "sha-n"}) for s in _plan("b").services}
    assert again == digests
    model_n = {s.unit: s.digest("release-1", {"m": "sha-m", "n": "sha-n2"}) for s in plan.services}
    assert [u for u in digests if digests[u] != model_n[u]] == ["rbee-hive.service", "rbee-worker@n-1.service"]
    upgraded = {s.unit: s.digest("release-2", {"m": "sha-m", "n": "sha-n"}) for s in plan.services}
    assert all(upgraded[u] != digests[u] for u in digests)


def test_rbee_up_writes_exactly_the_plan_of_its_target(tmp_path: Path, tiny_model_path: Path) -> None:
    spec = parse_spec(
        f"cluster: l\nhosts:\n  - {{name: box, address: localhost}}\n"
        f"models:\n  - {{id: tiny, source: 'file://{tiny_model_path}'}}\nplacements:\n  - {{model: tiny, slots: 2}}\n",
        "cluster.yaml",
    )
    facts = local_facts()
    local = plan_local(spec, tmp_path, tmp_path / "run", facts)
    secret_file = tmp_path / "run" / "credentials" / "cluster-secret"  # a fresh secret for each run
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    expected = plan_host(spec, "box", facts, local_target(spec, spec.host("box"), tmp_path, tmp_path / "run"),
                         cluster_secret=secret)  # fmt: skip
    written = sorted(p for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert written == sorted(Path(f.path) for f in expected.files)
    for planned in expected.files:
        assert Path(planned.path).read_text() == planned.text
    hive = yaml.safe_load(expected.file(f"{tmp_path}/run/hive-box.yaml").text)
    assert hive["placements"] == [{"model_id": "tiny", "replicas": 1, "slots": 2}]
    assert hive["models"][0]["local_path"] == str(tiny_model_path) and hive["host"] == "127.0.0.1"
    assert [s.kind for s in local.services] == ["queen", "hive"] and local.hosts == (expected,)


@pytest.mark.parametrize("name", ["a", "b"])
def test_deployed_plans_render_the_same_bytes_for_the_same_inputs(name: str) -> None:
    first, second = _plan(name, keys="k\n"), _plan(name, keys="k\n")
    assert [(f.path, f.text, f.mode) for f in first.files] == [(f.path, f.text, f.mode) for f in second.files]


def test_a_cuda_host_gets_its_toolkit_architectures_and_the_runtime_library_path() -> None:
    full = "".join(f"gpu={i}, NVIDIA L4, 23034, 22000, 8.9, 580.95.05, 40, [N/A]\n" for i in (0, 1))
    plan = _plan("b", PROBE + "glibc=2.36\n" + full)
    assert plan.problems == ()
    assert plan.features.cuda == "13" and plan.features.cuda_architectures == "89"
    lib = "/opt/rbee/venv/lib/python3.11/site-packages/nvidia/cu13/lib"
    for unit in ("rbee-hive.service", "rbee-worker@.service"):
        assert f"Environment=LD_LIBRARY_PATH={lib}\n" in plan.file(f"/etc/systemd/system/{unit}").text
    cpu = _plan("a", PROBE)
    assert "LD_LIBRARY_PATH" not in cpu.file("/etc/systemd/system/rbee-hive.service").text


def test_a_cuda_host_whose_driver_is_too_old_is_a_problem_of_its_plan() -> None:
    old = "".join(f"gpu={i}, NVIDIA L4, 23034, 22000, 8.9, 535.183.01, 40, [N/A]\n" for i in (0, 1))
    (problem,) = _plan("b", PROBE + old).problems
    assert problem.startswith("NVIDIA driver 535 is too old for CUDA 13")


def test_deploy_tls_gives_each_service_the_host_certificate_and_https_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rbee.deploy.cluster_ca import tls_for

    monkeypatch.setenv("RBEE_STATE_DIR", str(tmp_path))
    spec = parse_spec(SPEC + "deploy: {tls: true}\n", "cluster.yaml")
    plans = {n: plan_deployed_host(spec, n, parse_probe(PROBE), None, "k\n", SECRET, tls_for(spec, n)) for n in "ab"}
    b, a = plans["b"], plans["a"]
    files = {f.path: f for f in b.files}
    creds = "/etc/rbee/credentials"
    assert (files[f"{creds}/tls.crt"].mode, files[f"{creds}/tls.crt"].secret) == ("600", True)
    assert (files[f"{creds}/tls.key"].mode, files[f"{creds}/tls.key"].secret) == ("600", True)
    assert (files[f"{creds}/ca.crt"].mode, files[f"{creds}/ca.crt"].secret) == ("644", False)
    assert "PRIVATE KEY" in files[f"{creds}/tls.key"].text
    hive = yaml.safe_load(b.file("/etc/rbee/hive.yaml").text)
    assert hive["queen_url"] == "https://10.0.0.1:7833" and b.hive_url == "https://10.0.0.2:7835"
    assert [hive[f"tls_{k}_file"] for k in ("cert", "key", "ca")] == [
        "${CREDENTIALS_DIRECTORY}/tls.crt", "${CREDENTIALS_DIRECTORY}/tls.key", "${CREDENTIALS_DIRECTORY}/ca.crt"
    ]  # fmt: skip
    queen = yaml.safe_load(a.file("/etc/rbee/queen.yaml").text)
    assert queen["tls_ca_file"] == "${CREDENTIALS_DIRECTORY}/ca.crt"
    for plan, unit in ((a, "rbee-queen.service"), (b, "rbee-hive.service"), (b, "rbee-worker@.service")):
        text = plan.file(f"/etc/systemd/system/{unit}").text
        for name in ("tls.crt", "tls.key", "ca.crt"):
            assert f"LoadCredential={name}:{creds}/{name}\n" in text, unit
    worker_unit = b.file("/etc/systemd/system/rbee-worker@.service").text
    assert "--tls-cert-file %d/tls.crt --tls-key-file %d/tls.key --tls-ca-file %d/ca.crt\n" in worker_unit
    assert "--callback-url https://10.0.0.2:7835/v1/workers/ready" in b.file("/etc/rbee/workers/m-1.env").text
    plain = _plan("b")  # the default: nothing of it
    assert not any(f.path.startswith(f"{creds}/tls") or f.path.endswith("ca.crt") for f in plain.files)
    assert "tls" not in plain.file("/etc/systemd/system/rbee-worker@.service").text


def test_a_hive_exchanges_packets_only_with_the_queen_and_its_own_host() -> None:
    unit = _plan("b").file("/etc/systemd/system/rbee-hive.service").text
    assert "IPAddressDeny=any\nIPAddressAllow=localhost 10.0.0.2 10.0.0.1\n" in unit
    queen_host = _plan("a").file("/etc/systemd/system/rbee-hive.service").text
    assert "IPAddressAllow=localhost 10.0.0.1\n" in queen_host
    for name in ("rbee-queen.service", "rbee-worker@.service"):  # clients and the rollout gate call these
        assert "IPAddressDeny" not in _plan("a").file(f"/etc/systemd/system/{name}").text
    named = parse_spec(SPEC.replace("address: 10.0.0.2", "address: gpu-box.lan"), "cluster.yaml")
    unit = plan_deployed_host(named, "b", parse_probe(PROBE)).file("/etc/systemd/system/rbee-hive.service").text
    assert "IPAddressDeny" not in unit  # a name would need resolving: no filter rather than a stale one
