"""A real browser for tests: Debian's Chromium, driven by Playwright, offline.

Playwright for Python ships its own driver; it launches the system's /usr/bin/chromium
(`.ci/run` installs it), never a browser it downloads. Every request to anything but
127.0.0.1 is aborted and recorded, so a page that needs the internet fails its test.
A failing test leaves a screenshot in test-screenshots/ (git-ignored) and says where.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, Route, sync_playwright

CHROMIUM = os.environ.get("BROKER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-screenshots"
FAILED = pytest.StashKey[bool]()


@dataclass
class Browser:
    """One page in a fresh browser context, and what it tried that it should not have."""

    page: Page
    outside_requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether a test failed, so that `browser` knows to keep a screenshot."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context()
        page = context.new_page()
        opened = Browser(page)

        def only_loopback(route: Route) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                opened.outside_requests.append(route.request.url)
                route.abort()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                opened.errors.append(message.text)

        context.route("**/*", only_loopback)
        page.on("console", on_console)
        page.on("pageerror", lambda error: opened.errors.append(str(error)))
        try:
            yield opened
        finally:
            if request.node.stash.get(FAILED, False):
                SCREENSHOTS.mkdir(exist_ok=True)
                path = SCREENSHOTS / (re.sub(r"[^\w.-]+", "_", request.node.nodeid) + ".png")
                page.screenshot(path=path, full_page=True)
                print(f"\nscreenshot of the failing page: {path}")
            context.close()
            chromium.close()
