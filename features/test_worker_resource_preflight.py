"""The worker resource preflight feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.resources import *  # noqa: F403

scenarios("worker_resource_preflight.feature")
