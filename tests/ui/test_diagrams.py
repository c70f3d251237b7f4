"""Every mermaid diagram in the README and docs/ renders: mermaid itself, in the real browser, draws each one.

GitHub shows a diagram that does not parse as an error box, so a typo in a doc is a broken page. mermaid.js
comes from the npm registry (``scripts/bootstrap.sh dev`` fetches the pinned release into ``~/.cache/rbee``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

MERMAID_VERSION = "11.17.2"  # keep in step with scripts/bootstrap.sh
MERMAID_JS = Path(os.environ.get("RBEE_MERMAID_JS") or f"~/.cache/rbee/mermaid-{MERMAID_VERSION}.min.js").expanduser()
ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```mermaid\n(.*?)^```", re.S | re.M)


def diagrams() -> list[tuple[str, str]]:
    """``(FILE:LINE, source)`` of every mermaid block in README.md and docs/*.md."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def test_the_docs_have_diagrams() -> None:
    where = [place for place, _ in diagrams()]
    assert any(place.startswith("README.md") for place in where) and len(where) >= 3


def test_every_diagram_renders(browser: Browser) -> None:
    if not MERMAID_JS.is_file():
        pytest.fail(f"{MERMAID_JS} is missing: run scripts/bootstrap.sh dev (npm pack mermaid@{MERMAID_VERSION})",
                    pytrace=False)  # fmt: skip
    page = browser.new_page()
    try:
        page.set_content("<!doctype html><html><body></body></html>")
        page.add_script_tag(path=str(MERMAID_JS))
        page.evaluate("mermaid.initialize({startOnLoad: false, securityLevel: 'strict'})")
        broken = {}
        for index, (place, source) in enumerate(diagrams()):
            error = page.evaluate(
                """async ([id, text]) => {
                    try { const {svg} = await mermaid.render(id, text); return svg.includes('<svg') ? '' : 'no svg'; }
                    catch (e) { return String(e && e.message || e); }
                }""",
                [f"d{index}", source],
            )
            if error:
                broken[place] = error.splitlines()[:4]
        assert not broken, f"diagrams mermaid cannot draw: {broken}"
    finally:
        page.close()


def test_a_broken_diagram_is_caught(browser: Browser) -> None:
    """The check above can fail: a message holding ';' (a statement break in sequence diagrams) is refused."""
    if not MERMAID_JS.is_file():
        pytest.fail(f"{MERMAID_JS} is missing: run scripts/bootstrap.sh dev", pytrace=False)
    page = browser.new_page()
    try:
        page.set_content("<!doctype html><html><body></body></html>")
        page.add_script_tag(path=str(MERMAID_JS))
        error = page.evaluate(
            "async (t) => { try { await mermaid.parse(t); return ''; } catch (e) { return String(e.message || e); } }",
            "sequenceDiagram\n    A->>B: kept-alive; relay: id, created\n",
        )
        assert "Parse error" in error
    finally:
        page.close()
