"""The console in a real browser (headless Chromium), with the outside network cut off."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser import LiveBroker, Network, StartBroker
from tests.jwks_server import unsigned
from tests.oidc_provider import SignInProvider

pytestmark = pytest.mark.slow

DECLARE = "mutation($i: ListenerCreateInput!) { event_listener_create(input: $i) { uuid } }"
SEND = "mutation($i: EventSendInput!) { event_send(input: $i) }"
FETCH = "query($l: UUID!) { event_fetch(filter: {listener: $l}) { subject } }"
OTHER_OWNER = "00000000-0000-4000-8000-0000000000bb"
COUNT = "query($l: UUID!) { events(filter: {listeners: {uuids: [$l]}}) { objects { subject } } }"


def a_listener_with_events(
    broker: LiveBroker, user_key: str, *subjects: str, owner: str | None = None
) -> str:
    """Declare a listener in `mo`, send it `subjects` and wait until fan-out stored them."""
    headers = None
    if owner is not None:
        headers = {"Authorization": "Bearer " + unsigned({"alg": "none"}, {"uuid": owner})}
    listener: str = broker.graphql(
        DECLARE,
        {"i": {"namespace": "mo", "user_key": user_key, "routing_key": "engagement"}},
        headers,
    )["event_listener_create"]["uuid"]
    for subject in subjects:
        broker.graphql(
            SEND, {"i": {"namespace": "mo", "routing_key": "engagement", "subject": subject}}
        )
    deadline = time.monotonic() + 10
    while len(broker.graphql(COUNT, {"l": listener})["events"]["objects"]) < len(subjects):
        assert time.monotonic() < deadline, "fan-out did not store the events"
        time.sleep(0.05)
    return listener


def confirm(page: Page) -> None:
    expect(page.locator("h1")).to_contain_text("?")
    page.locator("#confirm").click()


def test_an_operator_finds_a_listener_silences_reruns_and_deletes_it(
    live_broker: StartBroker, browser_page: Page, network: Network
) -> None:
    broker = live_broker()
    listener = a_listener_with_events(broker, "orgunit-sync", "unit-a", "unit-b")
    assert broker.graphql(FETCH, {"l": listener})["event_fetch"] == {"subject": "unit-a"}
    page = browser_page

    page.goto(f"{broker.url}/console/listeners?backlog=1")
    row = page.locator(f'tr[data-listener="{listener}"]')
    expect(row.locator(".pending")).to_have_text("2")
    row.get_by_role("link", name="orgunit-sync").click()
    expect(page.locator("#pending")).to_have_text("2")
    delivered = page.locator('tr[data-subject="unit-a"]')
    expect(delivered.locator("td").nth(3)).to_have_text("1")  # deliveries
    expect(delivered.locator("td").nth(6)).to_contain_text("in ")  # next retry

    page.locator('input[name="subject"][value="unit-b"]').check()
    page.get_by_role("button", name="Silence selected…", exact=True).click()
    confirm(page)
    expect(page.locator("#flash")).to_have_text("Silenced 1 event(s).")
    expect(page.locator("#silenced")).to_have_text("1")
    expect(page.locator('tr[data-subject="unit-b"] .silenced')).to_have_text("yes")

    page.locator("#select-all").check()  # the console's script runs under its CSP
    expect(page.locator('input[name="subject"][value="unit-b"]')).to_be_checked()
    page.locator("#select-all").uncheck()
    page.locator('input[name="subject"][value="unit-a"]').check()
    page.get_by_role("button", name="Rerun selected…", exact=True).click()
    confirm(page)
    expect(page.locator("#flash")).to_have_text("Reran 1 event(s).")
    expect(page.locator('tr[data-subject="unit-a"] td').nth(6)).to_have_text("now")
    assert broker.graphql(FETCH, {"l": listener})["event_fetch"] == {"subject": "unit-a"}

    page.locator('input[name="delete_pending_events"]').check()
    page.locator("#delete-listener").click()
    expect(page.locator("h1")).to_have_text("Delete listener orgunit-sync?")
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator("#pending")).to_have_text("2")
    page.locator('input[name="delete_pending_events"]').check()
    page.locator("#delete-listener").click()
    confirm(page)
    expect(page.locator("#flash")).to_have_text("Deleted listener orgunit-sync.")
    expect(page.locator(f'tr[data-listener="{listener}"]')).to_have_count(0)
    assert all(url.startswith(broker.url) for url in network.requested)


def test_an_operator_silences_all_of_a_listener_s_events_from_its_page(
    live_broker: StartBroker, browser_page: Page, network: Network
) -> None:
    broker = live_broker()
    listener = a_listener_with_events(broker, "noisy-sync", "unit-a", "unit-b", "unit-c")
    page = browser_page

    page.goto(f"{broker.url}/console/listeners/{listener}")
    expect(page.locator("#silenced")).to_have_text("0")
    page.get_by_role("button", name="Silence all…", exact=True).click()
    expect(page.locator("h1")).to_have_text("Silence events of noisy-sync?")
    confirm(page)

    expect(page.locator("#flash")).to_have_text("Silenced 3 event(s).")
    expect(page.locator("#silenced")).to_have_text("3")
    expect(page.locator("tr[data-subject] .silenced")).to_have_text(["yes", "yes", "yes"])
    assert all(url.startswith(broker.url) for url in network.requested)


@pytest.fixture
def sign_in_provider() -> Iterator[SignInProvider]:
    provider = SignInProvider("event-broker-console", client_secret="console-secret")
    provider.start()
    yield provider
    provider.close()


def test_an_operator_signs_in_through_the_identity_provider_and_acts_as_themselves(
    live_broker: StartBroker, browser_page: Page, network: Network, sign_in_provider: SignInProvider
) -> None:
    idp = sign_in_provider
    idp.user.roles = ["read_event", "read_event_listener", "read_event_namespace", "silence_event"]
    # A development broker on the same data sets the scene, as the operator and as another owner.
    dev = live_broker(key_prefix="browser-sign-in")
    console = live_broker(
        key_prefix="browser-sign-in",
        auth="oidc",
        oidc_issuer=idp.issuer,
        console_client_id=idp.client_id,
        console_client_secret=idp.client_secret,
        console_session_secret="x" * 40,
    )
    mine = a_listener_with_events(dev, "mine", "unit-a", owner=idp.user.owner)
    theirs = a_listener_with_events(dev, "theirs", owner=OTHER_OWNER)
    page = browser_page

    page.goto(f"{console.url}/console/listeners")

    expect(page.locator("#owner")).to_have_text(idp.user.owner)  # back, signed in
    expect(page.locator(f'tr[data-listener="{mine}"] .pending')).to_have_text("1")
    expect(page.locator(f'tr[data-listener="{theirs}"]')).to_contain_text("not yours")
    page.get_by_role("link", name="mine").click()
    page.locator('input[name="subject"][value="unit-a"]').check()
    page.get_by_role("button", name="Silence selected…", exact=True).click()
    confirm(page)
    expect(page.locator("#flash")).to_have_text("Silenced 1 event(s).")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#message")).to_have_text("You are signed out of the console.")
    assert any(url.startswith(idp.issuer) for url in network.requested)
    assert idp.token_requests[-1]["code_verifier"]
