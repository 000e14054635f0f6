"""The page at ``/`` in a real browser: headless Debian Chromium driven by Playwright, against
the app on a real server with the real local LLM (conftest's ``running``).

Skips only when Chromium is missing outside CI; under CI a missing browser fails the test, since
``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Running
from tests.paths import ROOT

# The README's screenshot is refreshed only on request (UPDATE_SCREENSHOT=1), so that a test run
# does not change a tracked file; otherwise it goes to a temporary folder.
DOCS_SCREENSHOT = ROOT / "docs" / "web-page.png"
QUESTION = "What does the EXPIRE command do in Redis?"
PHONE = {"width": 390, "height": 844}
ANSWER_TIMEOUT_MS = 120_000

# Samples the answer's text length every 5 ms while it streams. A timer (not a
# MutationObserver) only sees intermediate lengths if the text really arrived over several
# network reads, so a page that waited for the whole body would fail this test.
RECORD_LENGTHS = """() => {
  const answer = document.getElementById("answer");
  window.answerLengths = [];
  window.answerSampler = setInterval(() => {
    if (answer.dataset.state !== "streaming") return;
    const n = answer.textContent.length;
    const seen = window.answerLengths;
    if (n > 0 && (seen.length === 0 || seen[seen.length - 1] !== n)) seen.push(n);
  }, 5);
}"""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI is set: .ci/run must install it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


def test_missing_chromium_skips_only_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        chromium_path()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        chromium_path()


def badge(page: Page, layer: str) -> str:
    return page.locator(f'#badges .badge[data-layer="{layer}"] b').inner_text()


def ask_and_wait(page: Page, query: str) -> None:
    """Submit ``query``, wait for the answer to finish and the stats panel to be refreshed."""
    updates = int(page.locator("#stats").get_attribute("data-updates") or 0)
    page.fill("#query", query)
    page.click("#ask")
    expect(page.locator("#answer")).to_have_attribute(
        "data-state", "done", timeout=ANSWER_TIMEOUT_MS
    )
    expect(page.locator("#stats")).to_have_attribute("data-updates", str(updates + 1))


def give_verdict(page: Page, button: str) -> None:
    """Click a feedback button and wait for its result and the stats refresh it triggers (a
    refresh still in flight would be counted by the next ``ask_and_wait``)."""
    updates = int(page.locator("#stats").get_attribute("data-updates") or 0)
    page.click(button)
    expect(page.locator("#stats")).to_have_attribute("data-updates", str(updates + 1))


def stats_cell(page: Page, layer: str, column: int) -> str:
    return page.locator(f'#stats-rows tr[data-layer="{layer}"] td').nth(column).inner_text()


def test_page_is_served_and_not_in_the_schema(running: Running) -> None:
    r = httpx.get(f"{running.url}/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<meta name="viewport"' in r.text
    assert "/" not in httpx.get(f"{running.url}/openapi.json").json()["paths"]


def test_answer_streams_into_the_page_then_replays_from_cache(
    running: Running, browser: Browser, tmp_path: Path
) -> None:
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{running.url}/")
    expect(page.locator("#stats")).to_have_attribute("data-updates", "1")
    page.evaluate(RECORD_LENGTHS)

    ask_and_wait(page, QUESTION)
    first_answer = page.locator("#answer").inner_text()
    lengths: list[int] = page.evaluate("window.answerLengths")
    tokens = int(page.locator("#answer").get_attribute("data-tokens") or 0)
    assert first_answer.strip()
    assert tokens > 3
    # Seen growing in the DOM over at least three moments, ending at the whole answer.
    assert len(lengths) >= 3, lengths
    assert lengths == sorted(lengths)
    assert lengths[-1] <= len(page.locator("#answer").text_content() or "")
    assert [badge(page, layer) for layer in ("embedding", "search", "llm")] == [
        "miss",
        "miss",
        "miss",
    ]
    assert "miss" in (page.locator('#badges [data-layer="llm"]').get_attribute("class") or "")
    assert page.locator("#sources li").count() > 0
    assert "redis-facts" in page.locator("#sources").inner_text()
    assert "ms" in page.locator("#timings").inner_text()
    assert stats_cell(page, "llm", 3) == "1"  # one miss

    ask_and_wait(page, QUESTION)
    assert page.locator("#answer").inner_text() == first_answer
    assert badge(page, "llm") == "hit"
    assert "hit" in (page.locator('#badges [data-layer="llm"]').get_attribute("class") or "")
    assert int(page.locator("#answer").get_attribute("data-tokens") or 0) > 1  # replayed pieces
    assert stats_cell(page, "llm", 1) == "50 %"
    assert float(page.locator("#tokens-saved").inner_text()) > 0
    # whether semantic hits are served, and at what measured rate ("on": the static rule)
    semantic = page.locator("#semantic-state").inner_text()
    assert semantic.startswith("semantic cache (on): serving at similarity ≥ 0.94"), semantic
    assert "judged" in semantic and "95 % bound" in semantic
    assert page.locator("#error").is_hidden()
    # Usable at phone width: nothing sticks out sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    screenshot = DOCS_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    page.close()


def test_api_key_and_semantic_option_are_sent(running: Running, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(f"{running.url}/")
    page.fill("#api-key", "a-test-key")
    page.locator("#api-key").dispatch_event("change")
    page.check("#semantic")
    with page.expect_request("**/ask/stream") as request_info:
        ask_and_wait(page, QUESTION)
    request = request_info.value
    assert request.headers["authorization"] == "Bearer a-test-key"
    assert json.loads(request.post_data or "{}") == {
        "query": QUESTION,
        "cache": {"semantic": True},
    }
    # The key is remembered across visits.
    page.reload()
    expect(page.locator("#api-key")).to_have_value("a-test-key")
    page.close()


def test_an_answer_can_be_marked_wrong_and_then_leaves_the_cache(
    running: Running, browser: Browser
) -> None:
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{running.url}/")
    question = "What does the PERSIST command do?"
    ask_and_wait(page, question)
    expect(page.locator("#feedback")).to_be_visible()
    ask_and_wait(page, question)
    assert badge(page, "llm") == "hit"
    give_verdict(page, "#feedback-no")
    expect(page.locator("#feedback-result")).to_have_text("Thanks: the cached answer was removed.")
    give_verdict(page, "#feedback-no")  # once per answer
    expect(page.locator("#feedback-result")).to_contain_text("Error 409")
    ask_and_wait(page, question)
    assert badge(page, "llm") == "miss"  # generated again


def test_http_error_is_shown(running: Running, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(f"{running.url}/")
    too_long = "x" * (running.settings.max_query_chars + 1)
    page.fill("#query", too_long)
    page.click("#ask")
    expect(page.locator("#error")).to_be_visible(timeout=30_000)
    expect(page.locator("#error")).to_contain_text(
        f"Error 422: query is longer than {running.settings.max_query_chars} characters"
    )
    expect(page.locator("#answer")).to_have_attribute("data-state", "error")
    page.close()


def test_error_event_mid_answer_is_shown(running: Running, browser: Browser) -> None:
    """An ``error`` event after some tokens (the LLM failed mid-answer) keeps the partial text
    and says what happened. The stream is scripted here; the page is the real one."""
    frames = [
        ("meta", {"cache": {"embedding": "hit", "search": "hit", "llm": "miss"}, "sources": []}),
        ("token", {"text": "Half an"}),
        ("error", {"status": 502, "detail": "the LLM failed"}),
    ]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in frames)
    page = browser.new_page()
    page.route(
        "**/ask/stream",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    page.goto(f"{running.url}/")
    page.fill("#query", QUESTION)
    page.click("#ask")
    expect(page.locator("#error")).to_contain_text("Error 502 during the answer: the LLM failed")
    expect(page.locator("#answer")).to_have_text("Half an")
    assert badge(page, "llm") == "miss"
    page.close()


def test_badges_and_stats_rows_follow_the_layers_the_server_reports(
    running: Running, browser: Browser
) -> None:
    """No layer list in the page: a layer the server adds (here a fourth) gets its badge and its
    stats row. Both responses are scripted; the page is the real one."""
    cache = {"embedding": "hit", "search": "hit", "rewrite": "miss", "llm": "semantic"}
    frames = [
        ("meta", {"cache": cache, "sources": [], "semantic": SEMANTIC}),
        ("token", {"text": "Cached."}),
        ("done", {"cache": cache, "usage": {}, "timings_ms": {}}),
    ]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in frames)
    row = {"hit": 3, "miss": 1, "bypass": 0, "hit_rate": 0.75}
    stats = {
        "layers": {name: row for name in cache},
        "upstream_calls": {"llm": 1, "embedding": 1, "search": 1},
        "tokens_saved": 10,
        "cost_saved_usd": 0.001,
    }
    page = browser.new_page()
    page.route(
        "**/ask/stream",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    page.route("**/stats", lambda route: route.fulfill(status=200, json=stats))
    page.goto(f"{running.url}/")
    ask_and_wait(page, QUESTION)
    layers = page.locator("#badges .badge").evaluate_all("bs => bs.map(b => b.dataset.layer)")
    assert layers == list(cache)
    assert [badge(page, layer) for layer in cache] == ["hit", "hit", "miss", "semantic"]
    rows = page.locator("#stats-rows tr").evaluate_all("rs => rs.map(r => r.dataset.layer)")
    assert rows == list(cache)
    assert stats_cell(page, "rewrite", 1) == "75 %"
    page.close()


SEMANTIC = {"similarity": 0.97, "matched_query": "What does EXPIRE do?"}
