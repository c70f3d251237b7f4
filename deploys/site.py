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
runtime(facts)
engine_op = engine(facts)
models()
wheelhouse = control.wheelhouse(facts.python_abi, facts.arch).fingerprint
engine_key = feature_set(facts).key if engine_op is not None else None
services(facts, f"{wheelhouse}:{engine_key}")
record(engine_key, wheelhouse)
health_gate()
