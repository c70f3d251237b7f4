"""The Ansible deploy's control-machine work, called by the roles through ``rbee.cli.ansible_cmd``.

Each function takes and returns plain JSON-able data: the roles only copy files and run commands;
what ends up on a host is the host's plan (``rbee.deploy.host_plan``), made here from the spec.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from rbee.client import QueenClient, QueenError
from rbee.deploy import health
from rbee.deploy.cluster_ca import tls_for
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.engine_plan import builds_here
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.probe import HostFacts, parse_probe
from rbee.deploy.release_record import release_record_text
from rbee.deploy.ssh_check import SshTarget
from rbee.deploy.wheelhouse import WheelhouseTarget, build_wheelhouse, planned_fingerprint, wheelhouse_target
from rbee.engine.build_kit import BuildKitError, build_kit
from rbee.engine.features import FeatureSet, local_feature_set
from rbee.engine.remote_build import build_on_host
from rbee.engine.ssh_remote import SshRemote
from rbee.engine.wheelcache import EngineBuildError, build_wheel, cached_wheel
from rbee.models import cached_model, fetch_model
from rbee.spec import load_spec
from rbee.spec.keys import api_keys_text
from rbee.spec.models import ClusterSpec, ModelSpec
from rbee.spec.placement import models_on
from rbee.spec.text import Address, LocalPath, UnixUser

_ADDRESS: TypeAdapter[str] = TypeAdapter(Address)
_USER: TypeAdapter[str] = TypeAdapter(UnixUser)
_LOCAL_PATH: TypeAdapter[str] = TypeAdapter(LocalPath)


def prepare_models(models: list[dict[str, Any]], cache_dir: str) -> dict[str, Any]:
    """Each model fetched (once) into the cache: id → path, size, sha256; ``changed`` when one was downloaded."""
    cache = Path(cache_dir).expanduser()
    out: dict[str, Any] = {}
    changed = False
    for raw in models:
        model = ModelSpec.model_validate(raw)
        if model.id in out:
            continue
        found = cached_model(model, cache) or fetch_model(model, cache)
        changed = changed or found.fetched
        out[model.id] = {"path": str(found.path), "size_bytes": found.size_bytes, "sha256": found.sha256}
    return {"models": out, "changed": changed}


def prepare_wheelhouses(targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The wheelhouse of each target (a ``WheelhouseTarget`` as JSON, with its ``key``), by key."""
    out: dict[str, Any] = {}
    for raw in targets:
        target = WheelhouseTarget(**{f.name: raw[f.name] for f in fields(WheelhouseTarget) if f.name in raw})
        target = replace(target, extras=tuple(target.extras))
        key = target.name
        if key in out:
            continue
        house = build_wheelhouse(target)
        out[key] = {
            "folder": str(house.folder),
            "rbee_wheel": house.rbee_wheel.name,
            "fingerprint": planned_fingerprint(target),  # the identity rbee deploy stamps too
            "extras": list(target.extras),  # installed beside rbee: NVML, the CUDA runtime of a CUDA host
        }
    return {"wheelhouses": out}


def wheel_sync(folder: str, there: list[dict[str, Any]], packs: Path | None = None) -> dict[str, Any]:
    """What a host's wheelhouse lacks, and one tar of those wheels to send (None when nothing is missing).

    ``there``: the files ``ansible.builtin.find`` lists in the host's wheelhouse (``path``,
    ``checksum``: sha1). ``extra``: files there that are not in the wheelhouse (to remove). The
    tar (members 0644 root:root, no timestamps) is named by its content, so it is made once.
    """
    source = Path(folder)
    wanted = {w.name: w for w in sorted(source.glob("*.whl"))}
    have = {Path(f["path"]).name: f.get("checksum") for f in there}
    sums = {name: hashlib.sha1(w.read_bytes(), usedforsecurity=False).hexdigest() for name, w in wanted.items()}
    needed = [name for name in wanted if have.get(name) != sums[name]]
    extra = sorted(set(have) - set(wanted))
    if not needed:
        return {"needed": [], "extra": extra, "tar": None}
    digest = hashlib.sha256("\n".join(f"{n} {sums[n]}" for n in needed).encode()).hexdigest()[:16]
    folder_out = packs or Path(tempfile.gettempdir()) / "rbee-wheel-packs"
    folder_out.mkdir(parents=True, exist_ok=True)
    tar = folder_out / f"wheels-{digest}.tar"
    if not tar.exists():
        partial = tar.with_suffix(f".tar.{os.getpid()}")
        with tarfile.open(partial, "w") as archive:
            for name in needed:
                info = archive.gettarinfo(str(wanted[name]), arcname=name)
                info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = 0o644, 0, 0, "root", "root", 0
                with wanted[name].open("rb") as data:
                    archive.addfile(info, data)
        partial.replace(tar)
    return {"needed": needed, "extra": extra, "tar": str(tar)}


def ssh_remote(target: SshTarget) -> SshRemote:
    """The OpenSSH client for a spec host, the way the inventory connects (key, port, known_hosts).

    Each value is its own argv element or a ``-o Key=value`` whose value is checked (address, user
    and known_hosts file as the spec allows them, ``ValidationError`` otherwise), and ``--`` ends
    the options: nothing from the spec can read as an option (``-oProxyCommand=...``). ``-o Port=``,
    not ``-p``, which means another thing to ``scp``.
    """
    _ADDRESS.validate_python(target.address)
    _USER.validate_python(target.user)
    options = ["-o", f"Port={int(target.port)}", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
    if target.key:
        options += ["-i", target.key, "-o", "IdentitiesOnly=yes"]
    if target.known_hosts_file:
        options += ["-o", f"UserKnownHostsFile={_LOCAL_PATH.validate_python(target.known_hosts_file)}"]
    return SshRemote(target.name, target.login, options)


def _builder(fs: FeatureSet, keys: dict[str, str], preferred: list[str]) -> str | None:
    """The host that builds ``fs``: the first preferred builder with that feature set, else the first host."""
    for name in [*preferred, *keys]:
        if keys.get(name) == fs.key:
            return name
    return None


def prepare_engines(
    features: list[dict[str, Any]],
    cache_dir: str,
    *,
    build: bool,
    hosts: list[str] | None = None,
    spec_file: str | None = None,
) -> dict[str, Any]:
    """The engine wheel of each feature set: cached, or built now when ``build``: here when this machine has
    that feature set, else on a host of it (``hosts``: the play's hosts, in the order of ``features``; their
    SSH settings and ``deploy.builders`` come from ``spec_file``)."""
    cache = Path(cache_dir).expanduser()
    spec = load_spec(spec_file) if spec_file else None
    out: dict[str, Any] = {}
    changed = False
    parsed = [FeatureSet(**{f.name: raw[f.name] for f in fields(FeatureSet) if f.name in raw}) for raw in features]
    keys = dict(zip(hosts or [], (fs.key for fs in parsed), strict=False))
    for fs in parsed:
        if fs.key in out:
            continue
        wheel = cached_wheel(fs, cache)
        problem = None
        if wheel is None and build:
            try:
                wheel = _build(fs, cache, keys, spec, spec_file)
                changed = True
            except (EngineBuildError, BuildKitError, OSError) as exc:
                problem = str(exc)
        elif wheel is None:
            problem = f"engine {fs.key} is not in the build cache and building was not asked for"
        found = {"wheel": str(wheel), "name": wheel.name} if wheel else {"wheel": None, "name": None}
        out[fs.key] = {**found, "problem": problem}
    return {"engines": out, "changed": changed}


def _build(fs: FeatureSet, cache: Path, keys: dict[str, str], spec: ClusterSpec | None, spec_file: str | None) -> Path:
    if builds_here(fs, local_feature_set("cpu", fs.version)):
        say(f"building engine {fs.key} on this control machine (once; minutes)")
        return build_wheel(fs, cache)
    name = _builder(fs, keys, list(spec.deploy.builders) if spec else [])
    if spec is None or spec_file is None or name is None:
        raise EngineBuildError(f"engine {fs.key}: no host of that feature set to build it on")
    target = SshTarget.from_spec(spec.host(name), Path(spec_file).parent)
    if target.user != "root":
        raise EngineBuildError(
            f"engine {fs.key}: its builder {name} is reached as {target.user}; the Ansible roles build on hosts "
            "reached as root only (use the pyinfra deploy, which uses sudo, or copy the wheel into the cache)"
        )
    say(f"building engine {fs.key} on {name} (once per feature set; minutes)")
    return build_on_host(ssh_remote(target), fs, build_kit(fs), f"{spec.deploy.prefix}/build", cache, progress=say)


def say(line: str) -> None:
    """A progress line on stderr (Ansible shows it with the task's result)."""
    print(f"--> {line}", file=sys.stderr, flush=True)


def plan_json(plan: HostPlan, facts: HostFacts) -> dict[str, Any]:
    """A host's plan as the roles read it (``rbee_preflight_result``): verdict, engine, workers, files."""
    return {
        "host": plan.host,
        "facts": _facts_json(facts),
        "problems": list(plan.problems),
        "line": table_line(plan.host, facts, list(plan.problems)),
        "backend": plan.backend,
        "gpu_indices": list(plan.gpu_indices),
        "wheelhouse": {"key": wheelhouse_target(plan.features).name, **asdict(wheelhouse_target(plan.features))},
        "engine": {"key": plan.features.key, "gpu_offload": plan.features.gpu_offload, **asdict(plan.features)},
        "models": list(plan.models),
        "workers": [
            {
                "name": w.name,
                "worker_id": w.worker_id,
                "model_id": w.model_id,
                "port": w.port,
                "slots": w.slots,
                "device": w.device,
                "unit": w.unit,
                "model_path": w.model_path,
                "ctx_size": w.ctx_size,
                "device_index": w.device_index,
            }
            for w in plan.workers
        ],
        "files": [asdict(f) for f in plan.files],
        "units": list(plan.units),
    }


def plan_hosts(spec_file: str, hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each host's plan from the spec and its probe output; ``hosts``: name → {"probe": text}.

    The queen's API keys are read here (control machine) and go into its plan as a secret file.
    """
    path = Path(spec_file)
    spec = load_spec(path)
    out: dict[str, Any] = {}
    for name, entry in hosts.items():
        facts = parse_probe(entry["probe"])
        sizes = {
            m: found.size_bytes
            for m in models_on(spec, name)
            if (found := cached_model(spec.model(m), Path(spec.deploy.model_cache).expanduser())) is not None
        }
        keys = api_keys_text(spec, path.parent) if name == spec.queen_host.name else None
        secret, tls = cluster_secret(spec.cluster), tls_for(spec, name)
        out[name] = plan_json(plan_deployed_host(spec, name, facts, sizes, keys, secret, tls), facts)
    return {"hosts": out}


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


def table_line(name: str, facts: HostFacts, problems: list[str]) -> str:
    """One host's line of the preflight table (the same columns as the pyinfra deploy's)."""
    result = "ok" if not problems else "FAILED: " + "; ".join(problems)
    return (
        f"{name:<16}{facts.os + '/' + facts.arch:<16}{facts.python_text:<9}"
        f"{facts.ram_available_bytes / 2**30:>8.1f}Gi{facts.disk_free_bytes / 2**30:>9.1f}Gi  "
        f"{len(facts.gpus):>4}  {result}"
    )


def release_record(data: dict[str, Any]) -> str:
    """The text of ``<prefix>/release.json`` (``rbee.deploy.release_record``, as ``rbee/deploys/record.py``).

    ``data``: cluster, host, spec_sha256, engine (key), wheelhouse (fingerprint), models (the host's
    ``rbee_models``) and cache (the model cache); the checksums come from the cache.
    """
    cache = Path(data["cache"]).expanduser()
    models: dict[str, str | None] = {}
    for raw in data["models"]:
        found = cached_model(ModelSpec.model_validate(raw), cache)
        models[raw["id"]] = found.sha256 if found else None
    return release_record_text(
        data["cluster"], data["host"], data["spec_sha256"], data["engine"], data["wheelhouse"], models
    )


def wait_healthy(
    queen_url: str, expected: dict[str, int], timeout_s: float, api_key: str | None, interval_s: float = 0.5
) -> dict[str, Any]:
    """Poll the queen until it sees every expected hive online and its placed workers ready, or time out.

    The rule is ``rbee.deploy.health``'s; ``expected``: hive id → its placed (systemd) workers.
    """
    with QueenClient(queen_url, api_key=api_key or "", timeout_s=5.0) as queen:
        expectation = health.Expectation(expected, managed_by="external")
        missing = health.wait_ready(queen, expectation, timeout_s, interval_s=interval_s)
        if missing:
            return {"ready": False, "missing": missing, "state": []}
        try:
            state = health.cluster_lines(queen.base_url, queen.hives(), queen.workers())
        except QueenError:
            state = []
        return {"ready": True, "missing": "", "state": state}
