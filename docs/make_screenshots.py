"""Make the viewer's screenshots in docs/images from a real headless Chromium.

Run from a checkout with the dev extra installed (and Debian's chromium and chromium-driver):

    .venv/bin/python docs/make_screenshots.py [--phone]

It starts a local collector with an in-memory database, sends it a few traces as a client
does, and photographs the list and one trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import urllib3
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from viewer_support import (  # noqa: E402 - the tests' helpers, found through the path above
    OTHER_AGENT_ID,
    new_profile,
    post_trace,
    rich_trace,
    simple_trace,
    start_browser,
)

from infinium_logging.collector import LocalCollector  # noqa: E402

_RUNS = (
    ("Summarise the weekly sales call", 3.81, False, OTHER_AGENT_ID),
    ("Triage inbox: 14 new emails", 12.4, False, None),
    ("Answer ticket #48190: password reset", 1.92, False, None),
    ("Draft release notes for v2.3", 7.05, True, OTHER_AGENT_ID),
    ("Answer ticket #48201: invoice copy", 2.37, False, None),
    ("Nightly CRM sync", 41.2, False, OTHER_AGENT_ID),
    ("Answer ticket #48207: wrong size", 2.88, False, None),
)


def main() -> None:
    """Send the traces, open the page, save the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phone", action="store_true", help="also save phone-sized pictures")
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        LocalCollector() as collector,
        urllib3.PoolManager() as pool,
        new_profile() as profile,
    ):
        for n, (name, duration, error, agent) in enumerate(_RUNS):
            trace = simple_trace(name, duration=duration, error=error)
            # Some variety in steps and tokens, as real runs have.
            first = trace["steps"][0]
            first["llm_call"]["prompt_tokens"] *= n + 1
            trace["steps"].extend(
                dict(first, step_number=k + 3, duration_ms=150 * (k + 1)) for k in range(n % 4)
            )
            post_trace(collector, pool, trace, *([agent] if agent else []))
        trace_id = post_trace(collector, pool, rich_trace())
        sizes = [("", 1280, 700)] + ([("-phone", 390, 844)] if args.phone else [])
        browser = start_browser(profile)
        try:
            for suffix, width, height in sizes:
                browser.set_window_size(width, height)
                browser.get(collector.viewer_url)
                WebDriverWait(browser, 20).until(
                    lambda b: len(b.find_elements(By.CSS_SELECTOR, "#rows tr")) == len(_RUNS) + 1
                )
                browser.save_screenshot(str(args.out / f"viewer-list{suffix}.png"))
                browser.get(f"{collector.viewer_url}#/trace/{trace_id}")
                WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.ID, "timeline"))
                # The failed step, opened to its error and stack trace.
                browser.execute_script(
                    "document.querySelectorAll('#timeline details')[2].open = true"
                )
                if not suffix:
                    browser.set_window_size(width, 1640)
                browser.save_screenshot(str(args.out / f"viewer-trace{suffix}.png"))
                browser.set_window_size(width, height)
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
