"""rbee site deploy: ``pyinfra inventory/inventory.py deploys/site.py`` (all hosts in parallel).

preflight → runtime → engine → models → services → health gate. A second run changes nothing.
"""

from deploys.engine import engine
from deploys.health import health_gate
from deploys.models import models
from deploys.preflight import preflight
from deploys.runtime import runtime
from deploys.services import services

facts = preflight()
runtime_op = runtime(facts)
engine_op = engine(facts)
model_ops = models()
services(facts, [op for op in (runtime_op, engine_op) if op is not None], model_ops)
health_gate()
