"""The preflight feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.preflight import *  # noqa: F403

scenarios("preflight.feature")
