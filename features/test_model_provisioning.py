"""The model provisioning feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.provisioning import *  # noqa: F403

scenarios("model_provisioning.feature")
