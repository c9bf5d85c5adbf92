"""Shared browser-test fixtures: Debian's Chromium through Playwright, and a live broker.

Playwright for Python ships its driver; the browser is the system's `/usr/bin/chromium`
(`.ci/run` installs it), never one that `playwright install` downloads. Every page runs
with the outside network cut off: requests to anything but 127.0.0.1 are aborted and
recorded, and a test fails if there was one. A failing test leaves a screenshot under
`test-results/browser/` (git-ignored) and prints its path.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, sync_playwright

from broker.app import create_app
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A second wall behind the page's route filter, which does not see redirect hops: names
# other than loopback do not resolve at all.
OFFLINE_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-results" / "browser"
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
LOCAL_HOSTS = frozenset({"127.0.0.1"})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell that a test failed."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module (the system's; it must be installed)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + OFFLINE_ARGS, headless=True
        )
        yield browser
        browser.close()


@dataclass
class Network:
    """What a page asked for: every URL, those outside loopback (never reached), and the
    Content-Security-Policy violations the browser reported."""

    requested: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions


@pytest.fixture
def network() -> Network:
    return Network()


@pytest.fixture
def browser_page(
    chromium: Browser, network: Network, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh browser context and page, offline but for 127.0.0.1."""
    context = chromium.new_context()

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            route.abort()

    def record(request: Request) -> None:
        # Every request, redirect hops included (which the route above never sees).
        network.requested.append(request.url)
        if urlsplit(request.url).hostname not in LOCAL_HOSTS:
            network.blocked.append(request.url)

    context.route("**/*", only_loopback)
    context.on("request", record)
    page = context.new_page()
    page.set_default_timeout(10_000)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            network.csp_violations.append(message.text)
        elif message.type == "error":
            network.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: network.errors.append(str(error)))
    yield page
    reports = request.node.stash.get(PHASE_REPORTS, {})
    if any(report.failed for report in reports.values()):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name.replace('/', '_')}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"\nscreenshot of the failing page: {path}")
    context.close()
    assert network.blocked == [], f"the page tried to reach the outside: {network.blocked}"
    assert network.csp_violations == [], network.csp_violations


@dataclass
class LiveBroker:
    """A broker served by uvicorn in a thread, on a free loopback port."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def graphql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The `data` of a GraphQL request that must succeed (without `headers`: as the
        development caller)."""
        body = httpx.post(
            f"{self.url}/graphql/v25",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            trust_env=False,
        ).json()
        assert "errors" not in body, body
        return body["data"]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


StartBroker = Callable[..., LiveBroker]


@pytest.fixture
def live_broker(
    redis_server: EmbeddedRedis, request: pytest.FixtureRequest
) -> Iterator[StartBroker]:
    """Start brokers on the session's real Redis, each with a key prefix of its own
    unless `key_prefix` is passed (brokers sharing one are replicas of each other)."""
    started: list[LiveBroker] = []

    def start(**overrides: Any) -> LiveBroker:
        defaults: dict[str, Any] = {
            "redis_url": redis_server.url,
            "key_prefix": f"browser{len(started)}-{abs(hash(request.node.nodeid)) % 10**8}",
            "ingest_shards": 2,
            "retry_min_seconds": 600,
            "retry_max_seconds": 600,
            "fanout_block_seconds": 0.05,
        }
        settings = Settings(**{**defaults, **overrides})
        port = _free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the broker did not start")
            time.sleep(0.02)
        broker = LiveBroker(f"http://127.0.0.1:{port}", server, thread)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()
