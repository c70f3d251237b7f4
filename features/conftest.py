"""pytest-bdd wiring: the feature files in this folder run against the real code.

Shared fixtures live in ``features/steps/*_fixtures.py``; step definitions in
``features/steps/<domain>.py``; each ``features/test_<area>.py`` binds one feature file.
"""

pytest_plugins = [
    "features.steps.data_fixtures",
    "features.steps.runtime_fixtures",
]
