"""The trace viewer in a real headless Chromium: live list, one trace, hostile values, keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import urllib3
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from viewer_support import (
    AGENT_SECRET,
    INSTALL_HINT,
    OTHER_AGENT_ID,
    browser_paths,
    new_profile,
    post_trace,
    rich_trace,
    simple_trace,
)

from infinium_logging._collector_store import StoredRow, TraceStore
from infinium_logging.collector import LocalCollector
from infinium_logging.convert import to_task
from infinium_logging.model import encode_task

T = TypeVar("T")
# Generous: the list polls every second, and CI machines are busy.
WAIT = 20.0

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_DESCRIPTION = "</script><script>window.__pwned = 1</script><b>bold?</b>"
HOSTILE_ACTION = "javascript:window.__pwned=2"
BIDI = "invoice\u202egpj.exe"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the whole module (starting one takes about a second)."""
    if browser_paths() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with new_profile() as profile:
        from viewer_support import start_browser  # noqa: PLC0415 - only once a browser exists

        driver = start_browser(profile)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def collector() -> Iterator[LocalCollector]:
    """A collector that accepts only the test agent's secret, shared by the module's tests."""
    with LocalCollector(agent_secret=AGENT_SECRET) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[urllib3.PoolManager]:
    """A pool to post traces with."""
    with urllib3.PoolManager(retries=False, timeout=10.0) as pool:
        yield pool


def wait(browser: WebDriver, what: Callable[[WebDriver], T], message: str) -> T:
    """Poll until ``what`` is truthy (no fixed sleeps)."""
    # The list is redrawn when traces arrive: an element read mid-redraw is looked up again.
    waiting = WebDriverWait(
        browser, WAIT, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )
    return waiting.until(what, message)


def open_page(browser: WebDriver, url: str) -> None:
    """Load the viewer and wait until its first list has arrived."""
    browser.get(url)
    wait(browser, lambda b: b.find_element(By.ID, "live").text == "live", "the list never loaded")


def row_named(browser: WebDriver, name: str) -> WebElement | None:
    """The list row whose name cell says exactly ``name``."""
    try:
        for row in browser.find_elements(By.CSS_SELECTOR, "#rows tr"):
            if row.find_element(By.CSS_SELECTOR, ".c-name").text == name:
                return row
    except StaleElementReferenceException:  # the list was redrawn meanwhile: look again
        pass
    return None


def open_trace(browser: WebDriver, name: str) -> None:
    """Click the trace called ``name`` in the list once it is there, and wait for it to open."""

    def click(b: WebDriver) -> bool:
        row = row_named(b, name)
        if row is None:
            return False
        try:
            row.find_element(By.CSS_SELECTOR, ".c-name a").click()
        except StaleElementReferenceException:
            return False
        return True

    wait(browser, click, f"{name!r} never appeared in the list")
    wait(browser, lambda b: b.find_elements(By.ID, "timeline"), "the trace never opened")


def js(browser: WebDriver, script: str) -> Any:
    """Run ``script`` in the page and return its value."""
    return browser.execute_script(script)


def severe_console_messages(browser: WebDriver) -> list[str]:
    """Errors the page logged: a CSP or Trusted Types violation would be one."""
    try:
        entries: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    except WebDriverException:
        return []
    return [e["message"] for e in entries if e["level"] == "SEVERE"]


def test_a_trace_posted_after_load_appears_without_a_reload(
    browser: WebDriver, collector: LocalCollector, http: urllib3.PoolManager
) -> None:
    """The list follows new traces by itself: the page is not reloaded (a flag set in it
    survives) and the new trace shows at the top with its figures and error mark."""
    open_page(browser, collector.viewer_url)
    js(browser, "window.__sameDocument = true")
    post_trace(collector, http, simple_trace("arrives after load", duration=2.25, error=True))
    row = wait(browser, lambda b: row_named(b, "arrives after load"), "the trace never appeared")
    assert row is not None
    assert js(browser, "return window.__sameDocument") is True
    first = browser.find_element(By.CSS_SELECTOR, "#rows tr")
    assert first.find_element(By.CSS_SELECTOR, ".c-name").text == "arrives after load"
    cells = [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td.num")]
    assert cells == ["2.25 s", "2", "405"]
    assert row.find_elements(By.CSS_SELECTOR, ".errmark")
    post_trace(collector, http, simple_trace("and another"))
    wait(browser, lambda b: row_named(b, "and another"), "the second trace never appeared")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#rows .c-name")]
    assert names[:2] == ["and another", "arrives after load"]
    assert not severe_console_messages(browser)


def test_a_trace_opens_to_its_timeline_usage_errors_and_raw_body(
    browser: WebDriver, collector: LocalCollector, http: urllib3.PoolManager
) -> None:
    """Opening a trace shows each step as a bar with LLM, tool and error marks, a step opens to
    its previews and error, usage per model, the errors with stack traces, environment, tags,
    sections, what fit_task cut, and the body exactly as received."""
    open_page(browser, collector.viewer_url)
    post_trace(collector, http, rich_trace())
    open_trace(browser, "Refund request #48213")
    assert browser.find_element(By.ID, "trace-title").text == "Refund request #48213"

    steps = browser.find_elements(By.CSS_SELECTOR, "#timeline .timeline > li")
    kinds = [s.get_attribute("class") for s in steps]
    assert kinds == ["kind-llm", "kind-tool", "kind-error", "kind-llm", "kind-tool", "kind-llm"]
    marks = [s.find_element(By.CSS_SELECTOR, ".marks").text.split() for s in steps]
    assert marks[0] == ["LLM"]
    assert marks[2] == ["TOOL", "ERROR"]
    widths = js(
        browser,
        "return Array.from(document.querySelectorAll('#timeline .b'),"
        " b => b.getBoundingClientRect().width)",
    )
    # 10.03 s of 13.79 s: the failed refund's bar is by far the longest.
    assert widths[2] == max(widths)
    assert widths[2] > 5 * widths[1] > 0

    failed = steps[2]
    assert not failed.find_element(By.CSS_SELECTOR, ".step-body").is_displayed()
    failed.find_element(By.TAG_NAME, "summary").click()
    body = failed.find_element(By.CSS_SELECTOR, ".step-body")
    assert body.is_displayed()
    assert "payments API timed out after 10.0 s" in body.text
    assert "httpx.ReadTimeout: timed out after 10.0 s" in body.text
    steps[1].find_element(By.TAG_NAME, "summary").click()
    assert "eu-west-1" in steps[1].find_element(By.CSS_SELECTOR, ".step-body").text  # metadata

    usage = [
        [cell.text for cell in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#usage tr")[1:]
    ]
    assert usage == [
        ["gpt-4o-mini · openai", "2", "1,260", "286", "–"],
        ["claude-sonnet-4 · anthropic", "1", "2,950", "402", "–"],
        ["Total", "3", "4,210", "688", "$0.0213"],
    ]
    errors = browser.find_elements(By.CSS_SELECTOR, "#errors .error-item")
    assert len(errors) == 2
    assert all('File "agent/tools.py", line 88' in e.text for e in errors)
    page = browser.find_element(By.ID, "trace-view").text
    assert "fit_task cut: step previews" in page
    for shown in ("langgraph", "support-bots", "canary", "TCK-48213", "Resolve the refund"):
        assert shown in page
    raw = browser.find_element(By.ID, "raw").text
    assert json.loads(raw) == json.loads(encode_task(to_task(rich_trace())))
    browser.find_element(By.ID, "copy").click()
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, ".copied").text, "copy said nothing")
    assert not severe_console_messages(browser)


def test_hostile_values_stay_inert_text(
    browser: WebDriver, collector: LocalCollector, http: urllib3.PoolManager
) -> None:
    """Markup, a closing script tag, a javascript: link and bidi controls from a trace are shown
    as text: no script runs (alert is never called, no flag is set) and no element is injected,
    in the list and in the trace."""
    open_page(browser, collector.viewer_url)
    js(browser, "window.__alerts = 0; window.alert = () => { window.__alerts += 1 }")
    hostile = rich_trace()
    hostile.update(name=HOSTILE_NAME, description=HOSTILE_DESCRIPTION, output_summary=BIDI)
    hostile["steps"][0]["action"] = HOSTILE_ACTION
    hostile["steps"][0]["output_preview"] = f"<a href='{HOSTILE_ACTION}'>{BIDI}</a>"
    hostile["environment"]["custom_tags"]["<svg onload=alert(2)>"] = "<iframe src=javascript:1>"
    trace_id = post_trace(collector, http, hostile)
    open_trace(browser, HOSTILE_NAME)
    for summary in browser.find_elements(By.CSS_SELECTOR, "#timeline summary"):
        summary.click()

    assert browser.current_url.endswith(f"#/trace/{trace_id}")
    assert browser.find_element(By.ID, "trace-title").text == HOSTILE_NAME
    assert js(browser, "return window.__alerts") == 0
    assert js(browser, "return window.__pwned === undefined") is True
    assert js(browser, "return document.querySelectorAll('img, iframe, svg, b').length") == 0
    assert js(browser, "return document.scripts.length") == 1
    assert js(browser, "return document.querySelectorAll('[onerror], [onload]').length") == 0
    hrefs = js(browser, "return Array.from(document.links, a => a.getAttribute('href'))")
    assert all(h.startswith("#") for h in hrefs), hrefs
    text = browser.find_element(By.ID, "trace-view").text
    assert HOSTILE_DESCRIPTION in text
    assert HOSTILE_ACTION in text
    # The right-to-left override is shown as a visible token and reorders nothing.
    assert "\u202e" not in js(browser, "return document.body.innerText")
    assert "invoiceU+202Egpj.exe" in text
    browser.find_element(By.CSS_SELECTOR, ".back").click()
    wait(browser, lambda b: b.find_element(By.ID, "list-view").is_displayed(), "no way back")
    assert js(browser, "return window.__alerts") == 0
    assert not severe_console_messages(browser)


def test_logged_steps_show_their_messages_and_a_long_description_keeps_the_figures_in_view(
    browser: WebDriver, collector: LocalCollector, http: urllib3.PoolManager
) -> None:
    """Steps made by logging share a few actions (``log``, ``llm_inference``): each timeline row
    shows the step's own message, its action once opened; a 10,000-character description
    scrolls in a box of its own, leaving the figures and the timeline on the first screen.
    An event logged at ERROR (action ``error``, no exception) is marked as an error, and a
    step under a millisecond reads "< 1 ms", not "0 ms"."""
    logged = simple_trace("logged steps")
    logged["description"] = "D" * 10_000
    logged["steps"] = [
        {"step_number": n, "action": "llm_inference", "description": f"Draft reply {n}"}
        for n in (1, 2, 3)
    ]
    logged["steps"].append(
        {"step_number": 4, "action": "error", "description": "Payment declined", "duration_ms": 0}
    )
    post_trace(collector, http, logged)
    open_page(browser, collector.viewer_url)
    open_trace(browser, "logged steps")
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline summary .action")
    assert [row.text for row in rows] == [
        "Draft reply 1",
        "Draft reply 2",
        "Draft reply 3",
        "Payment declined",
    ]
    last = browser.find_elements(By.CSS_SELECTOR, "#timeline .timeline > li")[-1]
    assert last.find_element(By.CSS_SELECTOR, ".marks").text.split() == ["ERROR"]
    assert last.find_element(By.CSS_SELECTOR, ".dur").text == "< 1 ms"
    below = "return document.querySelector('#timeline').getBoundingClientRect().top + scrollY"
    assert js(browser, below) < js(browser, "return window.innerHeight")
    first = browser.find_element(By.CSS_SELECTOR, "#timeline .timeline > li")
    first.find_element(By.TAG_NAME, "summary").click()
    assert "llm_inference" in first.find_element(By.CSS_SELECTOR, ".step-body").text


def test_filters_and_the_keyboard(
    browser: WebDriver, collector: LocalCollector, http: urllib3.PoolManager
) -> None:
    """Text, agent and errors-only filters narrow the list; j/k move (and stay on their trace
    when new ones arrive), Enter opens, Escape comes back, / focuses the search."""
    post_trace(collector, http, simple_trace("filter me: alpha"))
    post_trace(collector, http, simple_trace("filter me: beta", error=True), OTHER_AGENT_ID)
    open_page(browser, collector.viewer_url)

    def names(b: WebDriver) -> list[str]:
        return [e.text for e in b.find_elements(By.CSS_SELECTOR, "#rows .c-name")]

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("/")
    search = browser.switch_to.active_element
    assert search.get_attribute("id") == "q"
    search.send_keys("filter me")
    wait(browser, lambda b: names(b) == ["filter me: beta", "filter me: alpha"], "text filter")
    browser.find_element(By.ID, "errors").click()
    wait(browser, lambda b: names(b) == ["filter me: beta"], "errors-only filter")
    browser.find_element(By.ID, "errors").click()
    agent = browser.find_element(By.ID, "agent")
    agent.find_element(By.CSS_SELECTOR, f"option[value='{OTHER_AGENT_ID}']").click()
    wait(browser, lambda b: names(b) == ["filter me: beta"], "agent filter")
    agent.find_element(By.CSS_SELECTOR, "option[value='']").click()
    wait(browser, lambda b: len(names(b)) == 2, "filters cleared")

    search.send_keys(Keys.ESCAPE)
    active = browser.switch_to.active_element
    active.send_keys("j")
    active = browser.switch_to.active_element
    active.send_keys("j")
    focused = browser.switch_to.active_element
    assert focused.text == "filter me: alpha"
    # A trace arriving meanwhile redraws the list; the reader stays on their line.
    post_trace(collector, http, simple_trace("filter me: gamma"))
    wait(browser, lambda b: names(b)[0] == "filter me: gamma", "the new trace never came")
    focused = browser.switch_to.active_element
    assert focused.text == "filter me: alpha"
    focused.send_keys(Keys.ENTER)
    wait(browser, lambda b: b.find_elements(By.ID, "timeline"), "Enter did not open the trace")
    assert browser.find_element(By.ID, "trace-title").text == "filter me: alpha"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, lambda b: b.find_element(By.ID, "list-view").is_displayed(), "Escape")


def test_ten_thousand_traces_page_quickly_and_fit_a_phone(
    browser: WebDriver, tmp_path: Path
) -> None:
    """With 10,000 traces the page shows 50 at a time and pages both ways (keys too); on a
    phone-sized window nothing spills sideways."""
    db = tmp_path / "many.sqlite3"
    store = TraceStore(db)
    body = encode_task(to_task(simple_trace("bulk")))
    rows = [
        StoredRow(
            f"{n:08d}-0000-4000-8000-000000000000",
            OTHER_AGENT_ID,
            "2026-12-07T10:00:00Z",
            f"bulk {n}",
            body,
        )
        for n in range(10_000)
    ]
    store.add_many(rows)
    store.close()
    with LocalCollector(db=db) as collector:
        open_page(browser, collector.viewer_url)
        shown = browser.find_elements(By.CSS_SELECTOR, "#rows tr")
        assert len(shown) == 50
        assert browser.find_element(By.ID, "range").text == "1–50 of 10,000"
        assert row_named(browser, "bulk 9999") is not None
        browser.find_element(By.ID, "older").click()
        wait(browser, lambda b: b.find_element(By.ID, "range").text == "51–100 of 10,000", "older")
        assert row_named(browser, "bulk 9949") is not None
        browser.find_element(By.TAG_NAME, "body").send_keys("n")
        wait(browser, lambda b: b.find_element(By.ID, "range").text == "101–150 of 10,000", "n")
        browser.find_element(By.TAG_NAME, "body").send_keys("p")
        wait(browser, lambda b: b.find_element(By.ID, "range").text == "51–100 of 10,000", "p")
        browser.find_element(By.ID, "newer").click()
        wait(browser, lambda b: b.find_element(By.ID, "range").text == "1–50 of 10,000", "newer")

        browser.set_window_size(390, 844)
        try:
            overflow = "return document.documentElement.scrollWidth - window.innerWidth"
            wait(browser, lambda b: js(b, overflow) <= 0, "the list spills sideways on a phone")
            assert not browser.find_element(By.CSS_SELECTOR, ".traces thead").is_displayed()
            browser.find_element(By.CSS_SELECTOR, "#rows .c-name a").click()
            wait(browser, lambda b: b.find_elements(By.ID, "timeline"), "no trace on a phone")
            assert js(browser, overflow) <= 0
        finally:
            browser.set_window_size(1280, 900)
