"""The operator console over HTTP: pages, actions, CSRF, sign-in and permissions."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from redis.asyncio import Redis

from broker import operations
from broker.console.routes import CONTENT_SECURITY_POLICY
from broker.models import Listener
from broker.settings import Settings
from broker.storage.embedded import free_port
from broker.storage.keys import Keys
from broker.storage.store import IngestEntry, Store
from tests.conftest import Api, MakeApi
from tests.jwks_server import unsigned
from tests.oidc_provider import SignInProvider
from tests.snapshots import snapshot

CLIENT_ID = "event-broker-console"
SESSION_SECRET = "s" * 40
OTHER = "00000000-0000-4000-8000-0000000000bb"
ADMIN = "00000000-0000-4000-8000-0000000000cc"


def dev_token(owner: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + unsigned({"alg": "none"}, {"uuid": owner})}


async def declare(api: Api, user_key: str, owner: str | None = None, namespace: str = "mo") -> str:
    headers = None if owner is None else dev_token(owner)
    data = await api.data(
        "mutation($i: ListenerCreateInput!) { event_listener_create(input: $i) { uuid } }",
        {"i": {"namespace": namespace, "user_key": user_key, "routing_key": "engagement"}},
        headers=headers,
    )
    return str(data["event_listener_create"]["uuid"])


async def send(api: Api, *subjects: str, namespace: str = "mo", owner: str | None = None) -> None:
    for subject in subjects:
        await api.data(
            "mutation($i: EventSendInput!) { event_send(input: $i) }",
            {"i": {"namespace": namespace, "routing_key": "engagement", "subject": subject}},
            headers=None if owner is None else dev_token(owner),
        )


async def pending(api: Api, listener: str, wanted: int) -> list[dict[str, Any]]:
    """The listener's pending events, once fan-out has stored `wanted` of them."""
    deadline = time.monotonic() + 10
    while True:
        data = await api.data(
            "query($l: UUID!) { events(filter: {listeners: {uuids: [$l]}}) "
            "{ objects { subject silenced } } }",
            {"l": listener},
        )
        objects: list[dict[str, Any]] = data["events"]["objects"]
        if len(objects) >= wanted or time.monotonic() > deadline:
            return objects
        await asyncio.sleep(0.02)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def shown(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert found, html
    return found.group(1).strip()


async def act(api: Api, path: str, fields: dict[str, Any]) -> httpx.Response:
    """Post an action's form, then confirm it; the result page (after the redirect, if any)."""
    page = await api.http.get("/console/")
    form = {**fields, "csrf": csrf_of(page.text)}
    asked = await api.http.post(path, data=form)
    assert asked.status_code == 200 and 'id="confirm"' in asked.text, asked.text
    done = await api.http.post(path, data={**form, "confirm": "yes"})
    if done.status_code != 303:
        return done
    return await api.http.get(done.headers["location"])


# Pages -----------------------------------------------------------------------------------


async def test_the_listener_page_shows_its_pending_and_silenced_counts(api: Api) -> None:
    listener = await declare(api, "orgunit-sync")
    await send(api, "a", "b", "c")
    await pending(api, listener, 3)

    page = await api.http.get(f"/console/listeners/{listener}")

    assert page.status_code == 200
    assert shown(page.text, "pending") == "3"
    assert shown(page.text, "silenced") == "0"
    assert all(f'data-subject="{subject}"' in page.text for subject in "abc")


async def test_every_console_page_has_a_strict_csp_and_no_external_url(api: Api) -> None:
    listener = await declare(api, "orgunit-sync")
    for path in ("/console/", "/console/listeners", f"/console/listeners/{listener}"):
        page = await api.http.get(path)
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert "<style" not in page.text and "style=" not in page.text
        assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []  # no inline script
        urls = re.findall(r'(?:href|src|action)="([^"]*)"', page.text)
        assert urls and all(url.startswith(("/", "?", "http://broker/")) for url in urls), urls
    assert (await api.http.get("/console/static/console.js")).status_code == 200


async def test_listeners_filter_by_backlog_and_sort_by_pending(api: Api) -> None:
    busy = await declare(api, "busy")
    await declare(api, "idle", namespace="mo")
    await send(api, "a", "b")
    await pending(api, busy, 2)
    # "idle" declared before the sends, so both got them: acknowledge nothing, add one more.
    third = await declare(api, "late")
    await send(api, "c")
    await pending(api, third, 1)

    everything = await api.http.get("/console/listeners?sort=pending&order=desc")
    with_backlog = await api.http.get("/console/listeners?backlog=1&sort=user_key")
    too_old = await api.http.get("/console/listeners?older=60")

    order = re.findall(r'data-listener="([^"]+)"', everything.text)
    assert order[-1] == third
    assert shown(with_backlog.text, "total") == "3 listener(s)"
    assert shown(too_old.text, "total") == "0 listener(s)"


def pending_column(html: str) -> dict[str, str]:
    """Listener uuid -> the pending count its row of the listeners page shows."""
    rows = re.findall(r'<tr data-listener="([^"]+)">(.*?)</tr>', html, re.S)
    counts = {uuid: re.search(r'<td class="pending">(\d+)<', row) for uuid, row in rows}
    return {uuid: found.group(1) for uuid, found in counts.items() if found}


async def test_sorting_by_backlog_answers_from_the_snapshot_and_says_how_old_it_is(
    make_api: MakeApi,
) -> None:
    api = await make_api(stats_interval_seconds=3600)
    busy = await declare(api, "busy")
    await send(api, "a")
    await pending(api, busy, 1)
    sorted_page = "/console/listeners?sort=pending&order=desc"
    first = await api.http.get(sorted_page)  # no snapshot yet: read now, snapshot started
    assert (await api.http.get("/metrics")).status_code == 200  # waits for its first read
    await send(api, "b")
    late = await declare(api, "late")  # not in the snapshot: read when shown
    await send(api, "c")
    await pending(api, late, 1)

    page = await api.http.get(sorted_page)

    assert 'id="figures-age"' not in first.text
    assert shown(page.text, "figures-age").startswith("Pending, silenced and oldest as of")
    assert pending_column(page.text) == {busy: "1", late: "1"}  # busy has 3 by now


async def test_a_listener_s_events_are_searchable_by_subject(api: Api) -> None:
    listener = await declare(api, "search")
    await send(api, "person-1", "person-2", "unit-1")
    await pending(api, listener, 3)

    page = await api.http.get(f"/console/listeners/{listener}", params={"q": "person"})

    assert re.findall(r'data-subject="([^"]+)"', page.text) == ["person-1", "person-2"]


async def test_a_bad_query_parameter_is_a_clear_400(api: Api) -> None:
    for path in ("/console/listeners?owner=nope", "/console/listeners/not-a-uuid"):
        page = await api.http.get(path)
        assert page.status_code == 400
        assert "must be a UUID" in shown(page.text, "message")


@pytest.mark.parametrize(
    "query",
    ["namespace=%00", "namespace=%1B%5B31m", "q=%FF%FE", "namespace=ok&owner=%ED%A0%80"],
)
async def test_a_query_parameter_that_is_no_text_is_a_clear_400(api: Api, query: str) -> None:
    page = await api.http.get(f"/console/listeners?{query}")
    assert page.status_code == 400
    assert "UTF-8" in shown(page.text, "message") or "control character" in shown(
        page.text, "message"
    )


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("name=%00", "control character U+0000"),
        ("name=%1B%5B31m", "control character U+001B"),
        ("name=%FF%FE", "not UTF-8"),
        ("subject=a%00b", "control character U+0000"),
    ],
)
async def test_a_form_field_that_is_no_text_is_refused_and_changes_nothing(
    api: Api, redis: Any, encoded: str, message: str
) -> None:
    listener = await declare(api, "untouched")
    await send(api, "a")
    await pending(api, listener, 1)
    token = csrf_of((await api.http.get("/console/")).text)
    before = await snapshot(redis)
    for path in ("/console/namespaces/delete", f"/console/listeners/{listener}/events"):
        page = await api.http.post(
            path,
            content=f"csrf={token}&action=silence&confirm=yes&{encoded}",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert page.status_code == 400, page.text
        assert message in shown(page.text, "message")
    assert await snapshot(redis) == before


async def test_overview_shows_health_fanout_backlog_and_namespaces(api: Api) -> None:
    page = await api.http.get("/console/")
    assert shown(page.text, "health") == "reachable"
    assert shown(page.text, "fanout-backlog").endswith("entries")
    assert 'data-namespace="mo"' in page.text


async def test_console_false_serves_no_console(make_api: MakeApi) -> None:
    api = await make_api(console=False)
    assert (await api.http.get("/console/")).status_code == 404


# Actions ---------------------------------------------------------------------------------


async def test_silence_asks_for_confirmation_then_silences_and_says_so(api: Api) -> None:
    listener = await declare(api, "silencer")
    await send(api, "a", "b")
    await pending(api, listener, 2)
    path = f"/console/listeners/{listener}/events"

    page = await act(api, path, {"action": "silence", "scope": "selected", "subject": ["a"]})

    assert shown(page.text, "flash") == "Silenced 1 event(s)."
    assert shown(page.text, "silenced") == "1"
    assert {e["subject"]: e["silenced"] for e in await pending(api, listener, 2)} == {
        "a": True,
        "b": False,
    }


async def test_silence_all_pages_through_every_pending_event_and_counts_the_silenced(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "SCAN_BATCH", 2)  # several pages of 2
    listener = await declare(api, "quiet-please")
    subjects = ["a", "b", "c", "d", "e"]
    await send(api, *subjects)
    await pending(api, listener, 5)
    path = f"/console/listeners/{listener}/events"
    await act(api, path, {"action": "silence", "scope": "selected", "subject": ["c"]})

    page = await act(api, path, {"action": "silence", "scope": "all"})

    assert shown(page.text, "flash") == "Silenced 4 event(s)."  # "c" already was
    assert shown(page.text, "silenced") == "5"
    assert all(event["silenced"] for event in await pending(api, listener, 5))


async def test_rerun_all_makes_fetched_events_fetchable_again(api: Api) -> None:
    listener = await declare(api, "rerunner")
    await send(api, "a")
    await pending(api, listener, 1)
    fetch = "query($l: UUID!) { event_fetch(filter: {listener: $l}) { subject } }"
    assert (await api.data(fetch, {"l": listener}))["event_fetch"] == {"subject": "a"}
    assert (await api.data(fetch, {"l": listener}))["event_fetch"] is None

    page = await act(
        api, f"/console/listeners/{listener}/events", {"action": "rerun", "scope": "all"}
    )

    assert shown(page.text, "flash") == "Reran 1 event(s)."
    assert (await api.data(fetch, {"l": listener}))["event_fetch"] == {"subject": "a"}


async def test_delete_listener_asks_then_deletes(api: Api) -> None:
    listener = await declare(api, "doomed")
    await send(api, "a")
    await pending(api, listener, 1)
    path = f"/console/listeners/{listener}/delete"

    refused = await act(api, path, {})
    page = await act(api, path, {"delete_pending_events": "1"})

    assert "pending events for this listener" in shown(refused.text, "message")
    assert shown(page.text, "flash") == "Deleted listener doomed."
    assert f'data-listener="{listener}"' not in page.text


async def test_delete_namespace_is_refused_while_it_has_listeners(api: Api) -> None:
    await api.data(
        'mutation { event_namespace_declare(input: {name: "hr", public: true}) { name } }'
    )
    listener = await declare(api, "hr-sync", namespace="hr")

    refused = await act(api, "/console/namespaces/delete", {"name": "hr"})
    await api.data(
        "mutation($u: UUID!) "
        "{ event_listener_delete(input: {uuid: $u, delete_pending_events: true}) }",
        {"u": listener},
    )
    page = await act(api, "/console/namespaces/delete", {"name": "hr"})

    assert "still listeners" in shown(refused.text, "message")
    assert shown(page.text, "flash") == "Deleted namespace hr."
    assert 'data-namespace="hr"' not in page.text


async def test_a_post_without_the_session_csrf_token_is_refused_and_changes_nothing(
    api: Api,
) -> None:
    listener = await declare(api, "target")
    await send(api, "a")
    await pending(api, listener, 1)
    form = {"action": "silence", "subject": "a", "confirm": "yes"}
    path = f"/console/listeners/{listener}/events"

    forged = await api.http.post(path, data={**form, "csrf": "guessed"})
    await api.http.get("/console/")  # a session with a token, but the form lacks it
    missing = await api.http.post(path, data=form)

    assert forged.status_code == missing.status_code == 403
    assert [e["silenced"] for e in await pending(api, listener, 1)] == [False]


async def test_a_post_from_another_origin_is_refused(api: Api) -> None:
    listener = await declare(api, "target")
    token = csrf_of((await api.http.get("/console/")).text)

    answer = await api.http.post(
        f"/console/listeners/{listener}/delete",
        data={"csrf": token, "confirm": "yes"},
        headers={"Origin": "http://evil.example"},
    )

    assert answer.status_code == 403
    assert (await api.http.get(f"/console/listeners/{listener}")).status_code == 200


# Recent rates ----------------------------------------------------------------------------


async def test_recent_rates_count_stored_and_acknowledged_events(redis: Any) -> None:
    """The counts live in Redis, so every pod computes the same rates from them."""
    store = Store(redis, Keys("rates", 1))
    await store.setup()
    listener = Listener(UUID(int=7), UUID(int=8), "mo", "engagement", "rates")
    await store.create_listener_state(listener)
    now_ms = int(time.time() * 1000)
    entries = [IngestEntry(f"{now_ms}-{i}", "mo", "engagement", f"s{i}", 1) for i in range(6)]
    await store.apply(listener.uuid, entries)
    for _ in range(2):
        event = (await store.fetch(listener.uuid, None, 60_000, 60_000)).event
        assert event is not None
        assert await store.acknowledge(listener.uuid, None, event.subject, event.generation)

    (rates,) = await store.listener_rates([listener.uuid], int(time.time() * 1000), 5)
    (later,) = await store.listener_rates([listener.uuid], int(time.time() * 1000) + 7 * 60_000, 5)

    span = 5 + (int(time.time() * 1000) % 60_000) / 60_000
    assert rates.stored_per_minute == pytest.approx(6 / span, rel=0.05)
    assert rates.acknowledged_per_minute == pytest.approx(2 / span, rel=0.05)
    assert later.stored_per_minute == later.acknowledged_per_minute == 0


# Sign-in ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp() -> Iterator[SignInProvider]:
    provider = SignInProvider(CLIENT_ID)
    provider.start()
    yield provider
    provider.close()


async def oidc_console(make_api: MakeApi, idp: SignInProvider, **overrides: Any) -> Api:
    return await make_api(
        auth="oidc",
        oidc_issuer=idp.issuer,
        console_client_id=CLIENT_ID,
        console_session_secret=SESSION_SECRET,
        **overrides,
    )


async def sign_in(
    console: Api, idp: SignInProvider, owner: str, roles: list[str]
) -> httpx.Response:
    """The browser's round trip: console → provider (auto-approves) → callback."""
    idp.user.owner, idp.user.roles = owner, roles
    start = await console.http.get("/console/")
    assert start.status_code == 303
    login = await console.http.get(start.headers["location"])
    assert login.status_code == 302
    async with httpx.AsyncClient(trust_env=False) as browser:
        approved = await browser.get(login.headers["location"])
    assert approved.status_code == 302
    callback = await console.http.get(approved.headers["location"])
    assert callback.status_code == 303, callback.text
    assert (await console.http.get(callback.headers["location"])).status_code == 200
    return callback


async def test_oidc_sign_in_uses_pkce_and_names_the_token_s_owner(
    make_api: MakeApi, idp: SignInProvider
) -> None:
    console = await oidc_console(make_api, idp)

    callback = await sign_in(console, idp, OTHER, ["read_event_namespace"])
    page = await console.http.get("/console/")

    assert shown(page.text, "owner") == OTHER
    assert idp.token_requests[-1]["code_verifier"]
    cookie = callback.headers["set-cookie"].lower()
    assert cookie.startswith("broker_console=")
    assert {"path=/console", "httponly", "samesite=lax"} <= {
        part.strip() for part in cookie.split(";")
    }


async def test_signed_in_owner_sees_and_acts_only_on_their_own_listeners(
    make_api: MakeApi, idp: SignInProvider
) -> None:
    dev = await make_api()
    theirs = await declare(dev, "theirs", owner=OTHER)
    mine = await declare(dev, "mine", owner=ADMIN)
    await send(dev, "a")
    await pending(dev, theirs, 1)
    console = await oidc_console(make_api, idp)
    roles = ["read_event", "read_event_listener", "read_event_namespace", "silence_event"]
    await sign_in(console, idp, ADMIN, roles)

    listing = await console.http.get("/console/listeners")
    # The first sort by backlog reads live and starts the stats snapshot; later ones use it.
    by_backlog = await console.http.get("/console/listeners?sort=pending")
    for _ in range(100):
        if 'id="figures-age"' in by_backlog.text:
            break
        await asyncio.sleep(0.05)
        by_backlog = await console.http.get("/console/listeners?sort=pending")
    foreign = await console.http.get(f"/console/listeners/{theirs}")
    token = csrf_of(listing.text)
    refused = await console.http.post(
        f"/console/listeners/{theirs}/events",
        data={"csrf": token, "action": "silence", "subject": "a", "confirm": "yes"},
    )

    assert re.search(rf'data-listener="{theirs}">(?s:.*?)not yours', listing.text)
    assert re.search(rf'data-listener="{mine}">(?s:.*?)class="pending">1<', listing.text)
    assert 'id="figures-age"' in by_backlog.text
    assert pending_column(by_backlog.text) == {mine: "1"}  # theirs: "not yours" there too
    assert re.search(rf'data-listener="{theirs}">(?s:.*?)not yours', by_backlog.text)
    assert foreign.status_code == refused.status_code == 403
    assert [e["silenced"] for e in await pending(dev, theirs, 1)] == [False]


async def test_the_admin_role_acts_on_anyone_s_listener(
    make_api: MakeApi, idp: SignInProvider
) -> None:
    dev = await make_api()
    theirs = await declare(dev, "theirs", owner=OTHER)
    await send(dev, "a")
    await pending(dev, theirs, 1)
    console = await oidc_console(make_api, idp)
    await sign_in(
        console,
        idp,
        ADMIN,
        ["read_event", "read_event_all", "read_event_namespace", "silence_event", "admin"],
    )

    token = csrf_of((await console.http.get(f"/console/listeners/{theirs}")).text)
    done = await console.http.post(
        f"/console/listeners/{theirs}/events",
        data={"csrf": token, "action": "silence", "subject": "a", "confirm": "yes"},
    )

    assert done.status_code == 303
    assert [e["silenced"] for e in await pending(dev, theirs, 1)] == [True]


async def test_a_missing_role_is_refused_like_graphql_refuses_it(
    make_api: MakeApi, idp: SignInProvider
) -> None:
    console = await oidc_console(make_api, idp)
    await sign_in(console, idp, ADMIN, ["read_event_namespace"])

    page = await console.http.get("/console/listeners")

    assert page.status_code == 403
    assert shown(page.text, "message") == "No policy approved the access"


async def test_oidc_without_a_console_client_explains_itself(
    make_api: MakeApi, idp: SignInProvider
) -> None:
    console = await make_api(auth="oidc", oidc_issuer=idp.issuer)

    page = await console.http.get("/console/")

    assert page.status_code == 503
    assert "BROKER_CONSOLE_CLIENT_ID" in shown(page.text, "message")


async def test_a_callback_with_a_forged_state_signs_nobody_in(
    make_api: MakeApi, idp: SignInProvider
) -> None:
    console = await oidc_console(make_api, idp)

    page = await console.http.get("/console/auth/callback?code=x&state=forged")

    assert page.status_code == 400
    assert (await console.http.get("/console/")).status_code == 303


async def test_a_subject_search_takes_glob_characters_literally(api: Api) -> None:
    listener = await declare(api, "globs")
    await send(api, "a*b", "axb", "a?c")
    await pending(api, listener, 3)

    star = await api.http.get(f"/console/listeners/{listener}", params={"q": "a*"})
    question = await api.http.get(f"/console/listeners/{listener}", params={"q": "?"})

    assert re.findall(r'data-subject="([^"]+)"', star.text) == ["a*b"]
    assert re.findall(r'data-subject="([^"]+)"', question.text) == ["a?c"]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"console_client_id": "c", "oidc_issuer": "http://idp"}, "CONSOLE_SESSION_SECRET"),
        ({"console_client_id": "c", "console_session_secret": SESSION_SECRET}, "OIDC_ISSUER"),
        ({"console_session_secret": "too short"}, "at least 32 characters"),
    ],
)
def test_console_settings_that_cannot_work_stop_start_up(
    settings: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        Settings(**settings)


async def test_an_unreachable_event_store_is_a_clear_503_page(api: Api) -> None:
    store = api.app.state.broker_state["store"]
    working, store.redis = store.redis, Redis(port=free_port(), socket_connect_timeout=1)
    try:
        page = await api.http.get("/console/listeners")
    finally:
        await store.redis.aclose()
        store.redis = working

    assert page.status_code == 503
    assert shown(page.text, "message") == "The event store is unavailable; try again shortly."


async def test_an_unreachable_identity_provider_is_a_clear_503_page(make_api: MakeApi) -> None:
    console = await make_api(
        auth="oidc",
        oidc_issuer=f"http://127.0.0.1:{free_port()}/realms/mo",
        console_client_id=CLIENT_ID,
        console_session_secret=SESSION_SECRET,
    )

    start = await console.http.get("/console/")
    login = await console.http.get(start.headers["location"])

    assert login.status_code == 503
    assert shown(login.text, "message") == "The identity provider is unreachable."
