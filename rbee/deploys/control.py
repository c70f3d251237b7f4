"""Each host's plan, this run's inputs and changes for it, and the work still pending, on the control machine.

Deploy files run once per host; the memos of ``control_run``, ``control_models`` and ``control_engine`` make sure
each model is fetched, each engine feature set built and the wheelhouse prepared once, whatever the number of hosts.

The slow work (a model fetch, an engine build) happens only when the run may do it (``slow_work_allowed``): with
``-y`` while the operations are made (pyinfra then asks nothing), else only once they execute, after pyinfra's
"Detected changes" confirmation; never in a dry run. Until then the plan uses what the caches hold (a model's
pinned ``sha256`` from the spec stands for its checksum) and says what is still to fetch or build
(``pending_work``); ``plan_again`` makes the host's plan once more when that work is done.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.context import host

from rbee.deploy.cluster_ca import tls_for
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.engine_plan import builds_here
from rbee.deploy.host_diff import Changes, RunInputs, diff, wanted_state
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.probe import HostFacts
from rbee.deploy.release_record import release_record_text
from rbee.deploy.wheelhouse import wheelhouse_target
from rbee.deploys.control_engine import (
    engine_usable,
    engine_wheel,
    installed_engine,
    remote_engine_wheel,
    wheelhouse_at_hand,
    wheelhouse_fingerprint,
)
from rbee.deploys.control_models import hosted_model_size, model_checksums, model_file, model_size
from rbee.deploys.control_run import file_sha256, host_state, spec, spec_sha256
from rbee.deploys.provenance import release_provenance
from rbee.engine.features import local_feature_set
from rbee.spec.keys import api_keys_text
from rbee.spec.placement import models_on

_plans: dict[str, HostPlan] = {}
_facts: dict[str, HostFacts] = {}
_inputs: dict[str, RunInputs] = {}
_changes: dict[str, Changes] = {}

STARTS_SERVICES = ("restart", "start", "daemon")
"""The kinds of change after which a service runs a new process (``rbee.deploy.host_diff``)."""


def host_plan(facts: HostFacts, keys_readable: bool = True) -> HostPlan:
    """The current host's plan (``rbee.deploy.host_plan``), made once per host and run.

    The queen's API keys are read here, on the control machine; a key source without keys raises
    ``ApiKeysError`` (the preflight then plans without keys, ``keys_readable=False``, and fails the host).
    """
    name = str(host.data.rbee_host)
    _facts[name] = facts
    if name not in _plans:
        cluster = spec()
        base_dir = Path(host.data.rbee_spec_file).parent
        wants_keys = keys_readable and name == cluster.queen_host.name
        keys = api_keys_text(cluster, base_dir) if wants_keys else None
        placed = [cluster.model(m) for m in models_on(cluster, name)]
        sizes = {m.id: size for m in placed if (size := model_size(m, cluster)) is not None}
        secret = cluster_secret(cluster.cluster)
        _plans[name] = plan_deployed_host(cluster, name, facts, sizes, keys, secret, tls_for(cluster, name))
    return _plans[name]


def plan_again() -> HostPlan:
    """The current host's plan made again, from the preflight's facts, once the slow work is allowed: with the sizes
    of the models fetched now, and this run's inputs and changes computed again from it."""
    name = str(host.data.rbee_host)
    _plans.pop(name, None)
    _inputs.pop(host.name, None)
    _changes.pop(host.name, None)
    return host_plan(_facts[name])


def run_inputs(plan: HostPlan) -> RunInputs:
    """This run's inputs for the current host: fingerprints, checksums, the release record (each hashed once)."""
    if host.name in _inputs:
        return _inputs[host.name]
    fingerprint = wheelhouse_fingerprint(plan.features)
    wheel: tuple[str, str | None] | None = installed_engine(plan)
    engine_key = plan.features.key if wheel is not None else None
    if wheel is None and (found := engine_usable(plan)) is not None:
        engine_key = plan.features.key
        wheel = (remote_engine_wheel(plan, found), file_sha256(found.wheel) if found.wheel else None)
    checksums = model_checksums(plan)
    service_models = {m: sha or spec().model(m).source for m, sha in checksums.items()}  # not fetched yet: its source
    provenance = release_provenance(wheel[1] if wheel else None)  # release id, rbee version, engine wheel
    record = release_record_text(plan.cluster, plan.host, spec_sha256(), engine_key or "", fingerprint, checksums,
                                 provenance=provenance)  # fmt: skip
    _inputs[host.name] = RunInputs(fingerprint, engine_key, wheel, checksums, f"{fingerprint}:{engine_key}",
                                   service_models, record)  # fmt: skip
    return _inputs[host.name]


def changes(plan: HostPlan) -> Changes:
    """What the current host needs: the plan and this run's inputs against what the preflight read."""
    if host.name not in _changes:
        _changes[host.name] = diff(wanted_state(plan, run_inputs(plan)), host_state())
    return _changes[host.name]


def services_started() -> list[str]:
    """The hosts where this run (re)starts a service (read by the health gate, once every host is planned)."""
    return sorted(name for name, found in _changes.items() if any(found.has(kind) for kind in STARTS_SERVICES))


def pending_work(plan: HostPlan) -> list[str]:
    """What this host's deploy needs from the control machine that the run may not do yet (``slow_work_allowed``):
    the models to fetch and the engine to build; empty when the caches hold them."""
    cluster = spec()
    work = [f"fetch model {m} ({cluster.model(m).source})" for m in plan.models
            if model_file(cluster.model(m), cluster) is None and hosted_model_size(cluster.model(m), cluster) is None]
    planned = changes(plan)
    if (planned.has("wheelhouse") or planned.has("install", "runtime")) and not wheelhouse_at_hand(plan.features):
        work.append(f"prepare the wheelhouse {wheelhouse_target(plan.features).name} (rbee and its dependencies)")
    if installed_engine(plan) is not None:
        return work
    found = engine_wheel(plan.features)
    if found.wheel is None and found.failure is None:
        local = builds_here(plan.features, local_feature_set("cpu", plan.features.version))
        work.append(f"build engine {plan.features.key} ({'here' if local else 'on a host of that feature set'})")
    return work
