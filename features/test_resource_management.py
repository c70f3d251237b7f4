"""The resource management feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.resources import *  # noqa: F403

scenarios("resource_management.feature")
