"""A pyinfra deploy file for tests/security/test_atomic_put.py: one upload, described by environment variables.

``RBEE_TEST_SRC`` (a local file), ``RBEE_TEST_DEST``, ``RBEE_TEST_MODE``; ``RBEE_TEST_OP=files.put`` uses
pyinfra's own upload instead (the in-place write the atomic one replaces).
"""

import os

from pyinfra.operations import files

from rbee.deploys.atomic import atomic_put

src, dest, mode = os.environ["RBEE_TEST_SRC"], os.environ["RBEE_TEST_DEST"], os.environ.get("RBEE_TEST_MODE", "644")
if os.environ.get("RBEE_TEST_OP") == "files.put":
    files.put(name="put (pyinfra)", src=src, dest=dest, mode=mode)
else:
    atomic_put(name="put (atomic)", src=src, dest=dest, mode=mode)
