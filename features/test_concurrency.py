"""Concurrency against real queens, hives and workers (features/concurrency.feature)."""

from pytest_bdd import scenarios

from features.steps.concurrency import *  # noqa: F403
from features.steps.inference import *  # noqa: F403

scenarios("concurrency.feature")
