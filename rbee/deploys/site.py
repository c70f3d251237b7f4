"""The rbee site deploy as one function: ``rbee.deploys.site.site()`` (run by ``pyinfra INVENTORY deploys/site.py``).

preflight (probe and the host's state in one round trip, then the host's plan) → runtime → engine →
install (both, one pip pass) → models → services → release record → health gate. Every step translates
the same ``HostPlan``, and does only what the diff of the plan against the preflight's state
(``rbee.deploy.host_diff``) lists: a host already deployed gets no command after the preflight. A second run
changes nothing.

Another pyinfra project calls it (or any single step, each an ``@deploy`` function of ``rbee.deploys``) from
its own deploy file, with the inventory of ``rbee.deploys.inventory``::

    from rbee.deploys.site import site
    site()
"""

from typing import cast

from rbee.deploy.host_plan import HostPlan
from rbee.deploys import control
from rbee.deploys.engine import engine
from rbee.deploys.health import health_gate
from rbee.deploys.install import install
from rbee.deploys.models import models
from rbee.deploys.preflight import preflight
from rbee.deploys.record import record
from rbee.deploys.runtime import runtime
from rbee.deploys.services import services


def site() -> None:
    """Deploy the current host to the spec: every step of the site, in order, each only as far as it differs."""
    plan = cast(HostPlan, preflight())  # pyinfra types @deploy results as operations
    changes = control.changes(plan)
    runtime(plan=plan, changes=changes)
    engine(plan=plan, changes=changes)
    install(plan=plan, changes=changes)
    models(plan=plan, changes=changes)
    inputs = control.run_inputs(plan)
    services(plan=plan, changes=changes, release=inputs.release, model_sha256=inputs.service_models)
    record(plan=plan, changes=changes)
    health_gate()
