"""The Ansible deploy's control-machine side: ``rbee spec ansible-inventory``, ``rbee spec prepare``, role helpers.

``ansible_inventory`` and ``prepare_control`` are commands of ``rbee spec``. The roles in
``roles/`` call the helpers of this module on the control machine (``delegate_to: localhost``)
as ``python -m rbee.cli.ansible_cmd HELPER``: each reads one JSON document on stdin and prints
one on stdout, so the decisions stay in Python (``rbee.deploy``) and the roles only copy files::

    probe       the preflight probe script (POSIX sh, run on each host) → its text
    models      fetch the models into the control machine's cache       → their local paths
    plan        judge each host's probe (``rbee.deploy.probe.judge``)  → problems, engine key, workers
    wheelhouse  rbee + dependencies as wheels per target (Python, arch) → folder, fingerprint
    wheelsync   what a host's wheelhouse lacks (from ``find``)          → one tar of those wheels, strays
    engine      the engine wheel per feature set (CPU builds cached)    → wheel path, or why there is none
    record      the host's release record (``<prefix>/release.json``)   → its text
    health      wait until the queen sees every hive and placed worker  → ready, what is missing

``inventory SPEC`` and ``prepare SPEC`` are the two ``rbee spec`` commands, reachable here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from rbee.cli import exits
from rbee.cli.spec_cmd import SpecFile, read_spec_or_exit
from rbee.client import QueenClient, QueenError
from rbee.deploy import health
from rbee.deploy.ansible_inventory import ansible_inventory as build_inventory
from rbee.deploy.ansible_inventory import host_plan
from rbee.deploy.probe import PROBE_SCRIPT, parse_probe
from rbee.deploy.release_record import release_record_text
from rbee.deploy.wheelhouse import WheelhouseError, build_wheelhouse
from rbee.engine.features import FeatureSet
from rbee.engine.wheelcache import EngineBuildError, build_wheel, cached_wheel
from rbee.models import ModelFetchError, cached_model, fetch_model
from rbee.spec.models import ModelSpec

HEADER = "# rbee Ansible inventory, made by `rbee spec ansible-inventory {spec}`: change the spec, not this file.\n"
LOCAL_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


# ---------------------------------------------------------------------------------------------- rbee spec commands


def ansible_inventory(
    spec_file: SpecFile,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the inventory here (default: stdout).")
    ] = None,
) -> None:
    """Print the Ansible inventory of a spec (YAML): groups queen and hives, all.vars, rbee_* host vars."""
    spec = read_spec_or_exit(spec_file)
    digest = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    text = HEADER.format(spec=spec_file) + yaml.safe_dump(
        build_inventory(spec, spec_file.resolve().parent, spec_sha256=digest), sort_keys=False, width=120
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"{output}: {len(spec.hosts)} host(s)", err=True)


def prepare_control(
    spec_file: SpecFile,
    python: Annotated[str, typer.Option(help="Python (X.Y) of the hosts.")] = LOCAL_PYTHON,
    arch: Annotated[str, typer.Option(help="CPU arch of the hosts.")] = platform.machine(),
) -> None:
    """Prepare on this machine what a deploy ships (wheelhouse, engine wheels, models); print their paths as JSON.

    The Ansible playbook runs the same steps itself after probing the hosts; this command warms the
    caches ahead (e.g. in CI), assuming every host has this Python and arch (``backend: auto`` → cpu).
    """
    spec = read_spec_or_exit(spec_file)
    version = spec.deploy.llama_cpp_python
    engines = [
        {"backend": "cpu" if h.backend == "auto" else h.backend, "arch": arch, "python": python, "version": version}
        for h in spec.hosts
    ]
    try:
        out = {
            "wheelhouses": prepare_wheelhouses([{"python": python, "arch": arch}])["wheelhouses"],
            "engines": prepare_engines(engines, spec.deploy.build_cache, build=True)["engines"],
            "models": prepare_models([m.model_dump() for m in spec.models], spec.deploy.model_cache)["models"],
        }
    except (WheelhouseError, ModelFetchError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None
    typer.echo(json.dumps(out, indent=2))
    if any(e["wheel"] is None for e in out["engines"].values()):
        raise typer.Exit(exits.FAILURE)


# ---------------------------------------------------------------------------------------------- the steps


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


def _target(python: str, arch: str) -> str:
    return f"{python}-{arch}"


def prepare_wheelhouses(targets: list[dict[str, str]]) -> dict[str, Any]:
    """The wheelhouse of each target (``{"python": "3.11", "arch": "x86_64"}``), keyed ``3.11-x86_64``."""
    out: dict[str, Any] = {}
    for target in targets:
        key = _target(target["python"], target["arch"])
        if key in out:
            continue
        house = build_wheelhouse(target["python"], target["arch"])
        out[key] = {
            "folder": str(house.folder),
            "rbee_wheel": house.rbee_wheel.name,
            "fingerprint": house.fingerprint,
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


def prepare_engines(features: list[dict[str, Any]], cache_dir: str, *, build: bool) -> dict[str, Any]:
    """The engine wheel of each feature set: cached, or built now (CPU on this arch only, when ``build``)."""
    cache = Path(cache_dir).expanduser()
    local_arch = platform.machine()
    out: dict[str, Any] = {}
    changed = False
    for raw in features:
        fs = FeatureSet(backend=raw["backend"], arch=raw["arch"], python=raw["python"], version=raw["version"])
        if fs.key in out:
            continue
        wheel = cached_wheel(fs, cache)
        buildable = fs.backend == "cpu" and fs.arch == local_arch
        problem = None
        if wheel is None and buildable and build:
            print(f"--> building engine {fs.key} (once; minutes)", file=sys.stderr, flush=True)
            try:
                wheel = build_wheel(fs, cache)
                changed = True
            except EngineBuildError as exc:
                problem = str(exc)
        elif wheel is None:
            problem = (
                f"engine {fs.key} is not in the build cache and this control machine builds cpu wheels "
                f"for {local_arch} only: run `rbee engine build --backend {fs.backend}` on a "
                f"{fs.arch} machine with the {fs.backend} toolchain and copy the wheel into {cache_dir}/{fs.key}/"
            )
        found = {"wheel": str(wheel), "name": wheel.name} if wheel else {"wheel": None, "name": None}
        out[fs.key] = {**found, "problem": problem}
    return {"engines": out, "changed": changed}


def plan_hosts(hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Judge each host's probe output; ``hosts``: name → {"probe": text, "vars": its rbee_* variables}."""
    out: dict[str, Any] = {}
    for name, entry in hosts.items():
        data = entry["vars"]
        cache = Path(data["rbee_deploy"]["model_cache"]).expanduser()
        found = [cached_model(ModelSpec.model_validate(m), cache) for m in data["rbee_models"]]
        model_bytes = sum(f.size_bytes for f in found if f is not None)
        out[name] = host_plan(data, parse_probe(entry["probe"]), model_bytes)
    return {"hosts": out}


def release_record(data: dict[str, Any]) -> str:
    """The text of ``<prefix>/release.json`` (``rbee.deploy.release_record``, as ``deploys/record.py``).

    ``data``: cluster, host, spec_sha256, engine (key), wheelhouse (fingerprint), models (the host's
    ``rbee_models``) and cache (the model cache); the checksums come from the cache, the commit from git.
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


# ---------------------------------------------------------------------------------------------- role helpers


helpers = typer.Typer(
    help="Control-machine helpers of the Ansible roles: JSON on stdin, JSON on stdout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _stdin() -> dict[str, Any]:
    data: dict[str, Any] = json.load(sys.stdin)
    return data


def _print(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data))


@helpers.command("probe")
def probe_helper() -> None:
    """{} → {"script": the preflight probe (``rbee.deploy.probe.PROBE_SCRIPT``, POSIX sh)}."""
    _print({"script": PROBE_SCRIPT})


@helpers.command("models")
def models_helper() -> None:
    """{"models": [...], "cache": DIR} → {"models": {id: {path, size_bytes, sha256}}, "changed": bool}."""
    data = _stdin()
    try:
        _print(prepare_models(data["models"], data["cache"]))
    except ModelFetchError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None


@helpers.command("plan")
def plan_helper() -> None:
    """{"hosts": {name: {"probe": TEXT, "vars": {...}}}} → {"hosts": {name: plan}}."""
    _print(plan_hosts(_stdin()["hosts"]))


@helpers.command("wheelhouse")
def wheelhouse_helper() -> None:
    """{"targets": [{"python", "arch"}]} → {"wheelhouses": {"PY-ARCH": {folder, rbee_wheel, fingerprint}}}."""
    try:
        _print(prepare_wheelhouses(_stdin()["targets"]))
    except WheelhouseError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None


@helpers.command("wheelsync")
def wheelsync_helper() -> None:
    """{"folder": WHEELHOUSE, "there": [find's files]} → {"needed": [...], "extra": [...], "tar": PATH|null}."""
    data = _stdin()
    _print(wheel_sync(data["folder"], data["there"]))


@helpers.command("engine")
def engine_helper() -> None:
    """{"features": [...], "cache": DIR, "build": bool} → {"engines": {key: {wheel, name, problem}}, "changed"}."""
    data = _stdin()
    _print(prepare_engines(data["features"], data["cache"], build=bool(data.get("build", True))))


@helpers.command("record")
def record_helper() -> None:
    """{cluster, host, spec_sha256, engine, wheelhouse, models, cache} → {"text": release.json}."""
    _print({"text": release_record(_stdin())})


@helpers.command("health")
def health_helper() -> None:
    """{"queen_url", "expected": {hive: workers}, "timeout"} (+ $RBEE_API_KEY) → {"ready", "missing", "state"}."""
    data = _stdin()
    key = os.environ.get("RBEE_API_KEY") or None
    _print(wait_healthy(data["queen_url"], data["expected"], float(data["timeout"]), key))


helpers.command("inventory")(ansible_inventory)
helpers.command("prepare")(prepare_control)


if __name__ == "__main__":
    helpers()
