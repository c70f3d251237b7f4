"""A pyinfra deploy file for tests/deploy/test_verified_upload.py: one verified, stamped upload (``put_changed``).

``RBEE_TEST_SRC`` (a local file), ``RBEE_TEST_DEST``, ``RBEE_TEST_SHA256`` (what the host must find),
``RBEE_TEST_STAMP`` (the upload stamp's path).
"""

import os

from rbee.deploys.atomic import put_changed

put_changed(
    name="verified upload", src=os.environ["RBEE_TEST_SRC"], dest=os.environ["RBEE_TEST_DEST"], mode="640",
    verify_sha256=os.environ["RBEE_TEST_SHA256"], stamp=os.environ["RBEE_TEST_STAMP"],
)  # fmt: skip
