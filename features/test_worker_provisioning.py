"""The worker provisioning feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.engine import *  # noqa: F403

scenarios("worker_provisioning.feature")
