"""Inference and cancellation against a real queen, hive and worker (features/inference.feature)."""

from pytest_bdd import scenarios

from features.steps.inference import *  # noqa: F403

scenarios("inference.feature")
