"""Lifecycle against real hives, workers and `rbee up` (features/lifecycle.feature)."""

from pytest_bdd import scenarios

from features.steps.inference import *  # noqa: F403
from features.steps.lifecycle import *  # noqa: F403

scenarios("lifecycle.feature")
