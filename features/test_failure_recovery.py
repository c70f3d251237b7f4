"""Failure recovery against real queens, hives and workers (features/failure_recovery.feature)."""

from pytest_bdd import scenarios

from features.steps.inference import *  # noqa: F403
from features.steps.recovery import *  # noqa: F403

scenarios("failure_recovery.feature")
