"""The rbee site deploy as one function: ``rbee.deploys.site.site()`` (run by ``pyinfra INVENTORY deploys/site.py``).

preflight (probe and the host's state in one round trip, then the host's plan) → runtime → engine →
install (both, one pip pass) → models → services → release record → health gate. Every step translates
the same ``HostPlan``, and does only what the diff of the plan against the preflight's state
(``rbee.deploy.host_diff``) lists: a host already deployed gets no command after the preflight. A second run
changes nothing.

With ``-y`` the steps are made with everything they need (models fetched, engines built first). A run that shows
its changes and asks first (no ``-y``; ``--dry``; ``rbee plan``) fetches and builds nothing before the answer: the
changes it shows are planned from what the control machine's caches hold, and a host with changes gets one
operation that, once confirmed, fetches and builds what it lacks, plans the host again and runs its steps then
(``rbee.deploys.confirmed``).

Another pyinfra project calls it (or any single step, each an ``@deploy`` function of ``rbee.deploys``) from
its own deploy file, with the inventory of ``rbee.deploys.inventory``::

    from rbee.deploys.site import site
    site()
"""

from functools import partial
from typing import cast

from pyinfra.context import host

from rbee.deploy.host_plan import HostPlan
from rbee.deploys import control, control_run
from rbee.deploys.confirmed import drop, made_by, when_executing
from rbee.deploys.engine import engine
from rbee.deploys.health import health_gate
from rbee.deploys.install import install
from rbee.deploys.models import models
from rbee.deploys.operations import fail_host
from rbee.deploys.preflight import preflight
from rbee.deploys.record import record
from rbee.deploys.runtime import runtime
from rbee.deploys.services import services
from rbee.deploys.snapshot import adopt


def site() -> None:
    """Deploy the current host to the spec: every step of the site, in order, each only as far as it differs."""
    plan = cast(HostPlan, preflight())  # pyinfra types @deploy results as operations
    if control_run.slow_work_allowed():
        steps(plan)
    elif control.changes(plan):
        _after_confirmation(plan)
    health_gate()


def steps(plan: HostPlan) -> None:
    """The steps after the preflight, each doing what the diff of ``plan`` lists."""
    changes = control.changes(plan)
    adopt(plan=plan, changes=changes)  # a running release never kept: kept before anything changes
    runtime(plan=plan, changes=changes)
    engine(plan=plan, changes=changes)
    install(plan=plan, changes=changes)
    models(plan=plan, changes=changes)
    inputs = control.run_inputs(plan)
    services(plan=plan, changes=changes, release=inputs.release, model_sha256=inputs.service_models)
    record(plan=plan, changes=changes)


def _after_confirmation(plan: HostPlan) -> None:
    """Show the host's changes as planned now; once the run executes (after the answer), plan and run them again."""
    if work := control.pending_work(plan):
        control_run.say(f"{host.name}: after the confirmation (never in a dry run): {'; '.join(work)}")
    shown: list[str] = []
    when_executing(name="rbee: models fetched and engine built where missing, the host planned again, its steps run",
                   function=partial(_deploy_confirmed, shown))  # fmt: skip
    shown += made_by(partial(steps, plan))  # what pyinfra shows before it asks


def _deploy_confirmed(shown: list[str]) -> None:
    """The confirmed run of the current host: fetch and build what it lacks, plan it again, run its steps.

    The operations ``shown`` before the answer are dropped: these are made again from the new plan.
    """
    drop(shown)
    plan = control.plan_again()
    if plan.problems:  # what only the fetched models tell (their size against RAM and disk)
        fail_host(name=f"preflight: {host.name} cannot run rbee", reason="; ".join(plan.problems))
        return
    steps(plan)
