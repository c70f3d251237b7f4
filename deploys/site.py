"""rbee site deploy: ``pyinfra inventory/inventory.py deploys/site.py`` (all hosts in parallel).

preflight (probe, then the host's plan) → runtime → engine → models → services → release record →
health gate. Every step translates the same ``HostPlan``. A second run changes nothing.
"""

from typing import cast

from deploys import control
from deploys.engine import engine
from deploys.health import health_gate
from deploys.models import models
from deploys.preflight import preflight
from deploys.record import record
from deploys.runtime import runtime
from deploys.services import services
from rbee.deploy.host_plan import HostPlan

plan = cast(HostPlan, preflight())  # pyinfra types @deploy results as operations
runtime(plan)
engine_op = engine(plan)
models(plan)
wheelhouse = control.wheelhouse(plan.features).fingerprint
engine_key = plan.features.key if engine_op is not None else None
checksums = control.model_checksums(plan)
sources = {m: sha or control.spec().model(m).source for m, sha in checksums.items()}  # dry run: not fetched
services(plan, f"{wheelhouse}:{engine_key}", sources)
record(plan, engine_key, wheelhouse, checksums)
health_gate()
