"""The Ansible deploy's control-machine side: ``rbee spec ansible-inventory``, ``rbee spec prepare``, role helpers.

``ansible_inventory`` and ``prepare_control`` are commands of ``rbee spec``. The roles of the
``rbee.cluster`` collection (``ansible_collections/rbee/cluster``) call the helpers of this module on
the control machine through its action ``rbee.cluster.control``, as ``python -m rbee.cli.ansible_cmd
HELPER`` in a Python that imports rbee (not necessarily Ansible's own): each reads one JSON document
on stdin and prints one on stdout; the work is ``rbee.deploy.ansible_steps``'s, the roles only copy files::

    probe       the preflight probe script (POSIX sh, run on each host) → its text
    models      fetch the models into the control machine's cache       → their local paths
    plan        each host's plan from the spec and its probe            → verdict, engine, workers, files
    wheelhouse  rbee + dependencies as wheels per target (Python, arch) → folder, fingerprint
    wheelsync   what a host's wheelhouse lacks (from ``find``)          → one tar of those wheels, strays
    engine      the engine wheel per feature set (built here or on a host) → wheel path, or why there is none
    record      the host's release record (``<prefix>/release.json``)   → its text
    health      wait until the queen sees every hive and placed worker  → ready, what is missing

``inventory-json SPEC`` prints the inventory as JSON for the collection's inventory plugin
(``rbee.cluster.spec``); an invalid spec exits 2 with each problem at its ``file:line:column``.

``inventory SPEC`` and ``prepare SPEC`` are the two ``rbee spec`` commands, reachable here too.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rbee.cli import exits
from rbee.cli.spec_cmd import SpecFile, read_spec_or_exit
from rbee.deploy.ansible_inventory import ansible_inventory as build_inventory
from rbee.deploy.ansible_inventory import inventory_yaml
from rbee.deploy.ansible_steps import (
    plan_hosts,
    prepare_engines,
    prepare_models,
    prepare_wheelhouses,
    release_record,
    wait_healthy,
    wheel_sync,
)
from rbee.deploy.probe import PROBE_SCRIPT
from rbee.deploy.wheelhouse import WheelhouseError
from rbee.engine.features import local_feature_set
from rbee.models import ModelFetchError
from rbee.spec.keys import ApiKeysError

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
    text = HEADER.format(spec=spec_file) + inventory_yaml(build_inventory(spec, spec_file, spec_sha256=digest))
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
    caches ahead (e.g. in CI), assuming every host has this Python and arch and this machine's OS and libc
    (``backend: auto`` → cpu).
    """
    spec = read_spec_or_exit(spec_file)
    version = spec.deploy.llama_cpp_python
    here = local_feature_set("cpu", version)
    engines = [
        {"backend": "cpu" if h.backend == "auto" else h.backend, "arch": arch, "python": python, "version": version,
         "os": here.os, "libc": here.libc}
        for h in spec.hosts
    ]  # fmt: skip
    try:
        out = {
            "wheelhouses": prepare_wheelhouses([{"python": python, "os": "linux", "arch": arch}])["wheelhouses"],
            "engines": prepare_engines(engines, spec.deploy.build_cache, build=True)["engines"],
            "models": prepare_models([m.model_dump() for m in spec.models], spec.deploy.model_cache)["models"],
        }
    except (WheelhouseError, ModelFetchError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None
    typer.echo(json.dumps(out, indent=2))
    if any(e["wheel"] is None for e in out["engines"].values()):
        raise typer.Exit(exits.FAILURE)


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
    """{"spec": FILE, "hosts": {name: {"probe": TEXT}}} → {"hosts": {name: plan}} (``rbee.deploy.host_plan``)."""
    data = _stdin()
    try:
        _print(plan_hosts(data["spec"], data["hosts"]))
    except ApiKeysError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.FAILURE) from None


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
    """{"features": [...], "hosts": [...], "spec_file": F, "cache": DIR, "build": bool} → {"engines": {key: {wheel,
    name, problem}}, "changed"} (``hosts``: the play's hosts in the order of ``features``, for builder hosts)."""
    data = _stdin()
    result = prepare_engines(
        data["features"], data["cache"], build=bool(data.get("build", True)),
        hosts=data.get("hosts"), spec_file=data.get("spec_file"),
    )  # fmt: skip
    _print(result)


@helpers.command("record")
def record_helper() -> None:
    """{cluster, host, spec_sha256, engine, wheelhouse, models, cache} → {"text": release.json}."""
    _print({"text": release_record(_stdin())})


@helpers.command("health")
def health_helper() -> None:
    """{"queen_url", "expected": {hive: workers}, "timeout", "api_key"} → {"ready", "missing", "state"}.

    The key comes on stdin with the rest (never argv or the environment).
    """
    data = _stdin()
    key = str(data.get("api_key") or "") or None
    _print(wait_healthy(data["queen_url"], data["expected"], float(data["timeout"]), key))


@helpers.command("inventory-json")
def inventory_json_helper(spec_file: SpecFile) -> None:
    """SPEC → the inventory of ``rbee spec ansible-inventory`` as JSON (for the ``rbee.cluster.spec`` plugin)."""
    spec = read_spec_or_exit(spec_file)
    digest = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    _print(build_inventory(spec, spec_file, spec_sha256=digest))


helpers.command("inventory")(ansible_inventory)
helpers.command("prepare")(prepare_control)


if __name__ == "__main__":
    helpers()
