"""The model catalog feature, bound to its steps."""

from pytest_bdd import scenarios

from features.steps.catalog import *  # noqa: F403

scenarios("model_catalog.feature")
