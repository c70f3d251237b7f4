"""pytest-bdd wiring: the feature files in this folder run against the real code.

Processes, streams and waiting come from the one test harness (``tests/support``, fixtures in
``tests/support/fixtures.py``); scenario fixtures from ``features/steps/data_fixtures.py``; step
definitions in ``features/steps/<domain>.py``; each ``features/test_<area>.py`` binds one feature file.
"""

pytest_plugins = [
    "tests.support.fixtures",
    "features.steps.data_fixtures",
]
