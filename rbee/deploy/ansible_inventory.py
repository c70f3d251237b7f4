"""The Ansible side of the deploy, pure: the inventory of a spec, and what the roles decide per host.

``rbee spec ansible-inventory FILE`` writes ``ansible_inventory`` as YAML: groups ``queen`` and
``hives``, each host with the same ``rbee_*`` data the pyinfra adapter (``rbee.spec.inventory``)
gives pyinfra, the SSH settings as ``ansible_*`` variables, and the cluster-wide values in
``all.vars``. The roles in ``roles/`` call small control-side helpers (``rbee.cli.ansible_cmd``)
whose decisions are made here: ``host_plan`` (the preflight verdict and everything the services
need to know about a host) and ``cluster_missing`` (the health gate). No I/O in this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rbee.deploy.layout import HostLayout, cuda_device, worker_instances
from rbee.deploy.probe import HostFacts, Requirements, judge
from rbee.engine.features import FeatureSet
from rbee.spec.inventory import host_data
from rbee.spec.models import ClusterSpec

CLUSTER_VARS = ("rbee_cluster", "rbee_queen_url", "rbee_runtime", "rbee_deploy")
"""Host data that is the same on every host: written once, in ``all.vars`` (with ``rbee_spec_sha256``)."""

MODEL_RAM_FACTOR = 1.2
"""A host needs size × this of RAM per placed model, plus its reserve (as ``deploys/preflight.py``)."""

DISK_MARGIN_BYTES = 512 * 1024**2
"""Free disk a host needs beyond its models (as ``deploys/preflight.py``)."""

DEV_NULL = "/dev/null"


def _ssh_args(known_hosts_file: str | None) -> str | None:
    if known_hosts_file is None:
        return None
    if known_hosts_file == DEV_NULL:  # host keys are not checked at all (test hosts, throwaway machines)
        return f"-o UserKnownHostsFile={DEV_NULL} -o StrictHostKeyChecking=no"
    return f"-o UserKnownHostsFile={known_hosts_file}"


def connection_vars(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ansible_*`` connection variables of a host, from its pyinfra data (``ssh_*`` keys)."""
    if "ssh_hostname" not in data:  # address: localhost
        return {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    out: dict[str, Any] = {
        "ansible_host": data["ssh_hostname"],
        "ansible_port": data["ssh_port"],
        "ansible_user": data["ssh_user"],
        "ansible_become": bool(data.get("_sudo", False)),
        "ansible_python_interpreter": "auto_silent",
    }
    if "ssh_key" in data:
        out["ansible_ssh_private_key_file"] = data["ssh_key"]
    if (args := _ssh_args(data.get("ssh_known_hosts_file"))) is not None:
        out["ansible_ssh_common_args"] = args
    return out


def ansible_inventory(spec: ClusterSpec, base_dir: Path, spec_sha256: str = "") -> dict[str, Any]:
    """The YAML inventory of a spec: ``all.vars`` + groups ``hives`` (every host) and ``queen`` (one).

    ``spec_sha256`` (of the spec file) goes into ``all.vars.rbee_spec_sha256``, for the release
    record each host keeps (the pyinfra deploy takes it from ``$RBEE_SPEC``).
    """
    hosts: dict[str, dict[str, Any]] = {}
    cluster: dict[str, Any] = {}
    for host in spec.hosts:
        data = host_data(spec, host, base_dir)
        for key in CLUSTER_VARS:
            cluster[key] = data.pop(key)
        rbee = {k: v for k, v in data.items() if k.startswith("rbee_")}
        hosts[host.name] = {**connection_vars(data), **rbee}
    return {
        "all": {
            "vars": {**cluster, "rbee_spec_sha256": spec_sha256},
            "children": {
                "hives": {"hosts": hosts},
                "queen": {"hosts": {spec.queen_host.name: {}}},
            },
        }
    }


def _facts_json(facts: HostFacts) -> dict[str, Any]:
    return {
        "os": facts.os,
        "arch": facts.arch,
        "kernel": facts.kernel,
        "distro": facts.distro,
        "python": facts.python_text,
        "python_abi": facts.python_abi,
        "python_venv": facts.python_venv,
        "ram_total_bytes": facts.ram_total_bytes,
        "ram_available_bytes": facts.ram_available_bytes,
        "disk_free_bytes": facts.disk_free_bytes,
        "systemd": facts.systemd,
        "gpus": [{"index": g.index, "name": g.name, "memory_total_mib": g.memory_total_mib} for g in facts.gpus],
        "complete": facts.complete,
    }


def requirements(data: Mapping[str, Any], model_bytes: int) -> Requirements:
    """What a host must offer, given the total size of the models placed on it."""
    return Requirements(
        backend=data["rbee_backend"],
        gpus=data["rbee_gpus"],
        min_ram_bytes=int(model_bytes * MODEL_RAM_FACTOR) + int(data["rbee_reserve"]["ram_bytes"]),
        min_disk_bytes=model_bytes + DISK_MARGIN_BYTES,
    )


def table_line(name: str, facts: HostFacts, problems: list[str]) -> str:
    """One host's line of the preflight table (the same columns as the pyinfra deploy's)."""
    result = "ok" if not problems else "FAILED: " + "; ".join(problems)
    return (
        f"{name:<16}{facts.os + '/' + facts.arch:<16}{facts.python_text:<9}"
        f"{facts.ram_available_bytes / 2**30:>8.1f}Gi{facts.disk_free_bytes / 2**30:>9.1f}Gi  "
        f"{len(facts.gpus):>4}  {result}"
    )


def host_plan(data: Mapping[str, Any], facts: HostFacts, model_bytes: int) -> dict[str, Any]:
    """Everything the roles need to know about one probed host, as plain JSON.

    ``data``: the host's ``rbee_*`` variables; ``model_bytes``: the size of the models placed on it.
    ``problems`` is empty when the host can run rbee; the rest is what the engine, runtime and
    services steps of the pyinfra deploy compute from the same facts.
    """
    problems = judge(facts, requirements(data, model_bytes))
    backend = facts.backend_for(data["rbee_backend"])
    gpus = data["rbee_gpus"]
    gpu_indices = [g.index for g in facts.gpus] if gpus == "all" else list(gpus)
    layout = HostLayout(data["rbee_deploy"]["prefix"])
    models = {m["id"]: m for m in data["rbee_models"]}
    instances = worker_instances(dict(data))
    features = FeatureSet(
        backend=backend, arch=facts.arch, python=facts.python_abi, version=data["rbee_deploy"]["llama_cpp_python"]
    )
    workers = [
        {
            "name": w.name,
            "worker_id": w.worker_id,
            "model_id": w.model_id,
            "port": w.port,
            "slots": w.slots,
            "device": w.device,
            "unit": w.unit,
            "model_path": layout.model_path(w.model_id),
            "ctx_size": models[w.model_id]["context"],
            "device_index": cuda_device(w.device, gpus) if backend == "cuda" else 0,
        }
        for w in instances
    ]
    return {
        "host": data["rbee_host"],
        "facts": _facts_json(facts),
        "problems": problems,
        "line": table_line(data["rbee_host"], facts, problems),
        "backend": backend,
        "gpu_indices": gpu_indices,
        "devices": gpu_indices if backend == "cuda" else [],
        "wheelhouse": {"python": facts.python_abi, "arch": facts.arch},
        "engine": {
            "key": features.key,
            "backend": features.backend,
            "arch": features.arch,
            "python": features.python,
            "version": features.version,
            "gpu_offload": features.gpu_offload,
        },
        "model_paths": {model_id: layout.model_path(model_id) for model_id in models},
        "ctx_size": max((m["context"] for m in models.values()), default=2048),
        "workers": workers,
        "worker_port_first": max((w.port for w in instances), default=7839) + 1,
    }


def cluster_missing(expected: Mapping[str, int], hives: list[dict[str, Any]], workers: list[dict[str, Any]]) -> str:
    """What the queen does not see yet ("" when ready): hives not online, placed workers not idle/busy.

    ``expected``: hive id → number of placed workers; ``hives``/``workers``: the queen's
    ``GET /v1/hives`` and ``GET /v1/workers`` lists (the pyinfra health gate's rule).
    """
    online = {h["hive_id"] for h in hives if h["status"] == "online"}
    missing = [f"hive {h}" for h in sorted(set(expected) - online)]
    ready = Counter(
        w["hive_id"] for w in workers if w["state"] in ("idle", "busy") and w.get("managed_by") == "external"
    )
    missing += [f"{n - ready[h]} placed worker(s) on {h}" for h, n in sorted(expected.items()) if ready[h] < n]
    return ", ".join(missing)


def cluster_state(queen_url: str, hives: list[dict[str, Any]], workers: list[dict[str, Any]]) -> list[str]:
    """The cluster as the health gate prints it: one line per hive with its workers."""
    lines = [f"rbee cluster at {queen_url}: {len(hives)} hive(s), {len(workers)} worker(s)"]
    for hive in sorted(hives, key=lambda h: h["hive_id"]):
        mine = [w for w in workers if w["hive_id"] == hive["hive_id"]]
        described = ", ".join(f"{w['model_id']} {w['state']}" for w in mine) or "no workers"
        lines.append(f"{hive['hive_id']:<16} {hive['status']:<7} {hive['url']:<28} {described}")
    return lines
