"""rbee site deploy: ``pyinfra inventory/inventory.py deploys/site.py`` (all hosts in parallel).

preflight → runtime → engine → models → services → release record → health gate. A second run changes nothing.
"""

from typing import cast

from deploys import control
from deploys.engine import engine, feature_set
from deploys.health import health_gate
from deploys.models import models
from deploys.preflight import preflight
from deploys.record import record
from deploys.runtime import runtime
from deploys.services import services
from rbee.deploy.probe import HostFacts

facts = cast(HostFacts, preflight())  # pyinfra types @deploy results as operations
runtime_op = runtime(facts)
engine_op = engine(facts)
model_ops = models()
services(facts, [op for op in (runtime_op, engine_op) if op is not None], model_ops)
record(
    feature_set(facts).key if engine_op is not None else None,
    control.wheelhouse(facts.python_abi, facts.arch).fingerprint,
)
health_gate()
