"""The worker registry feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.registry import *  # noqa: F403

scenarios("worker_registry.feature")
