"""The queen's dashboard at /ui in a real browser, against a local cluster started as a user does (``rbee up``).

``RBEE_UI_SCREENSHOT=docs/dashboard.png`` keeps the screenshot of the page there (after some traffic and a worker
that was killed and restarted; without it the screenshot goes to the test's temporary folder).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from rbee_runtime.queen.dashboard.board import SAMPLE_S
from tests.e2e.conftest import API_KEY, start_local_cluster
from tests.support.processes import ProcessPool
from tests.support.services import LocalCluster, start_queen
from tests.support.wire import heartbeat
from tests.ui.conftest import SLOW_MS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SCREENSHOT_ENV = "RBEE_UI_SCREENSHOT"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def expect(target: Any) -> Any:
    """Playwright's ``expect`` (imported late: without Playwright the ``browser`` fixture fails, naming why)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def state(cluster: LocalCluster) -> dict[str, Any]:
    response = httpx.get(f"{cluster.queen_url}/ui/api/state", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def some_traffic(cluster: LocalCluster, rounds: int = 6) -> None:
    """A few requests every few seconds, so the charts of the screenshot have something to show."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 48}
    for i in range(rounds):
        for _ in range(1 + i % 3):
            httpx.post(f"{cluster.queen_url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
        time.sleep(SAMPLE_S)


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path) -> LocalCluster:
    """``rbee up`` of one host with a worker of ``tiny``; the queen wants the API key ``API_KEY``."""
    return start_local_cluster(module_processes, tiny_model_path)


@pytest.fixture(scope="module")
def page(browser: Browser, cluster: LocalCluster) -> Iterator[Page]:
    """One tab on the dashboard for the module, the key given once (it lives in the tab's sessionStorage)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(SLOW_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
        assert errors == [], errors  # no script error on the page during the module's tests
    finally:
        context.close()


@pytest.mark.engine
@pytest.mark.slow
def test_the_state_endpoint_needs_a_key(cluster: LocalCluster) -> None:
    url = f"{cluster.queen_url}/ui/api/state"
    bare = httpx.get(url, timeout=10)
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert bare.json()["error"]["code"] == "MISSING_API_KEY" and bare.json()["error"]["type"] == "authentication_error"
    wrong = httpx.get(url, headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "INVALID_API_KEY"
    body = state(cluster)
    assert body["api_keys"] is True and [w["model_id"] for w in body["workers"]] == ["tiny"]
    page = httpx.get(f"{cluster.queen_url}/ui", timeout=10)  # the page itself holds no data
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.engine
@pytest.mark.slow
def test_the_page_asks_for_the_key_then_lists_the_worker(page: Page, cluster: LocalCluster) -> None:
    page.goto(f"{cluster.queen_url}/ui")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.fill("#key-input", "sk-wrong")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_contain_text("INVALID_API_KEY")  # asked again, saying why
    page.fill("#key-input", API_KEY)
    page.click("#key-form button[type=submit]")
    expect(dialog).to_be_hidden()
    worker_id = state(cluster)["workers"][0]["worker_id"]
    row = page.locator(f'#workers tr[data-worker-id="{worker_id}"]')
    expect(row).to_contain_text("tiny")
    expect(row).to_have_attribute("data-state", "idle")
    expect(row).to_contain_text("0/2")  # slots busy/total
    host = page.locator('#hosts [data-hive-id="here"]')
    expect(host).to_contain_text("online")
    expect(host).to_contain_text("CPU only")
    expect(page.locator('#models tr[data-model-id="tiny"]')).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('rbee-api-key')") == API_KEY


@pytest.mark.engine
@pytest.mark.slow
def test_the_playground_streams_a_reply(page: Page, cluster: LocalCluster) -> None:
    expect(page.locator("#pg-model option")).to_have_text(["tiny"])
    page.fill("#pg-prompt", "Tell me about bees.")
    page.fill("#pg-max-tokens", "24")
    page.click("#pg-send")
    expect(page.locator("#pg-output")).to_have_attribute("data-done", "true")
    stats = page.locator("#pg-stats").inner_text()
    assert stats.startswith("done: "), stats
    chunks = int(stats.split()[1])
    assert chunks >= 2, stats  # more than one streamed chunk reached the page
    assert page.locator("#pg-output").inner_text().strip()
    # the request shows in the traffic once the counters are sampled again (every 5 s)
    expect(page.locator('#models tr[data-model-id="tiny"] td').nth(4)).not_to_have_text("0.0")
    if os.environ.get(SCREENSHOT_ENV):
        some_traffic(cluster)


@pytest.mark.engine
@pytest.mark.slow
def test_a_killed_worker_is_marked_on_the_page(page: Page, cluster: LocalCluster, tmp_path: Path) -> None:
    worker = state(cluster)["workers"][0]
    worker_id, pid = worker["worker_id"], worker["pid"]
    row = page.locator(f'#workers tr[data-worker-id="{worker_id}"]')
    expect(row).to_have_attribute("data-state", "idle")
    os.kill(pid, signal.SIGKILL)
    crash = page.locator("#errors li[data-source=worker]", has_text=worker_id)
    expect(crash).to_contain_text("crashed")
    expect(crash).to_contain_text("SIGKILL")
    expect(row.locator("td.last-error")).to_contain_text("SIGKILL")
    # the hive restarts a placement's worker: the page follows it back to idle, one restart counted
    expect(row).to_have_attribute("data-state", "idle")
    expect(row.locator("td").nth(7)).to_have_text("1")
    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


HOSTILE = '<img src=x onerror="document.title=1">'


@pytest.mark.slow
def test_a_queen_without_keys_asks_for_none_and_shows_hostile_names_as_text(
    browser: Browser, processes: ProcessPool
) -> None:
    queen = start_queen(processes)
    queen.wait_healthy()
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("console", lambda message: problems.append(message.text) if "Content Security" in message.text else None)
    try:
        tab.goto(f"{queen.url}/ui")
        expect(tab.locator("#hosts")).to_contain_text("No hive has sent a heartbeat yet.", timeout=SLOW_MS)
        expect(tab.locator("#live")).to_contain_text("live")
        assert not tab.locator("#key-dialog").is_visible()
        expect(tab.locator("#forget-key")).to_be_hidden()
        beat = heartbeat("h-1", models=[HOSTILE], url="http://127.0.0.1:9", version=HOSTILE)
        assert queen.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json")).status_code == 200
        expect(tab.locator("#models")).to_contain_text(HOSTILE)  # a name from a heartbeat is text, never markup
        expect(tab.locator("#hosts")).to_contain_text(f"rbee {HOSTILE}")
        assert tab.locator("main img").count() == 0 and tab.title() == "rbee dashboard"
        assert problems == []
    finally:
        tab.close()
