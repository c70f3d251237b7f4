"""A real headless browser for the dashboard tests: Debian's Chromium driven by Playwright.

Playwright is given the system Chromium (``executable_path``): its own browser download needs the internet.
A missing browser fails the test with the reason (``scripts/bootstrap.sh dev`` installs both); leave these
tests out on purpose with ``-m "not browser"``. ``$RBEE_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ENV = "RBEE_CHROMIUM"
#: How long a page may take to show something (generous: the 2 shared cores may be busy).
SLOW_MS = 60_000
_HOW = "run scripts/bootstrap.sh dev, or leave the browser tests out on purpose: -m 'not browser'"


def chromium_path() -> str | None:
    """``$RBEE_CHROMIUM``, else Debian's ``chromium`` on PATH."""
    return os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this folder that takes ``browser`` gets the ``browser`` marker."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()) and item.get_closest_marker("browser") is None:
            item.add_marker("browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for one module: Playwright's event loop runs in this thread while it is open, so it
    is closed after the module (``asyncio.run`` of later tests would fail meanwhile)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the browser tests need Playwright (pip package 'playwright', in the dev extra): {_HOW}",
                    pytrace=False)  # fmt: skip
    path = chromium_path()
    if path is None:
        pytest.fail(f"the browser tests need Chromium (Debian package 'chromium'; or set ${CHROMIUM_ENV}): {_HOW}",
                    pytrace=False)  # fmt: skip
    from playwright.sync_api import expect

    expect.set_options(timeout=SLOW_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield launched
        finally:
            launched.close()
