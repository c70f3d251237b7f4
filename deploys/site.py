"""rbee site deploy: ``pyinfra inventory/inventory.py deploys/site.py`` (all hosts in parallel).

preflight (probe and the host's state in one round trip, then the host's plan) → runtime → engine →
install (both, one pip pass) → models → services → release record → health gate. Every step translates
the same ``HostPlan``, and does only what the diff of the plan against the preflight's state
(``rbee.deploy.host_diff``) lists: a host already deployed gets no command after the preflight. A second run
changes nothing.
"""

import gc
from typing import cast

from deploys import control
from deploys.engine import engine
from deploys.health import health_gate
from deploys.install import install
from deploys.models import models
from deploys.preflight import preflight
from deploys.record import record
from deploys.runtime import runtime
from deploys.services import services
from rbee.deploy.host_plan import HostPlan

plan = cast(HostPlan, preflight())  # pyinfra types @deploy results as operations
changes = control.changes(plan)
runtime(plan, changes)
engine(plan, changes)
install(plan, changes)
models(plan, changes)
inputs = control.run_inputs(plan)
services(plan, changes, inputs.release, inputs.service_models)
record(plan, changes)
health_gate()
# The objects alive now (modules, plans, connections) live until pyinfra exits: frozen, the garbage collector
# no longer scans them, neither while the operations run nor at exit (~0.2-0.3 s of a no-op otherwise).
gc.freeze()
