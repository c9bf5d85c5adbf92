"""The delivery contract (os2mo-events.md, points 1-10), through the GraphQL API."""

from __future__ import annotations

import asyncio

import pytest

from tests import clients
from tests.clients import ack, declare, drain, fetch, send, settle
from tests.conftest import BACK_OFF, Api, MakeApi

# Also on a real 3-node Redis Cluster: every script must stay inside one hash slot.
pytestmark = pytest.mark.cluster


async def test_event_sent_before_a_listener_exists_does_not_reach_it(api: Api) -> None:
    early = await declare(api, "person", "early")
    await send(api, "person", "before")
    late = await declare(api, "person", "late")
    await send(api, "person", "after")
    await settle(api)
    assert {e["subject"] for e in await drain(api, early)} == {"before", "after"}
    assert [e["subject"] for e in await drain(api, late)] == ["after"]


async def test_send_without_listeners_is_dropped_but_confirmed(api: Api) -> None:
    await send(api, "nobody-listens", "x")
    await settle(api)
    listener = await declare(api, "nobody-listens", "late")
    assert await fetch(api, listener) is None


async def test_resent_subject_is_one_pending_event(api: Api) -> None:
    listener = await declare(api, "person", "l")
    for _ in range(3):
        await send(api, "person", "same")
    await settle(api)
    assert [e["subject"] for e in await drain(api, listener)] == ["same"]


async def test_resend_invalidates_the_old_token_and_is_fetchable_at_once(backoff_api: Api) -> None:
    api = backoff_api
    listener = await declare(api, "person", "l")
    await send(api, "person", "s")
    await settle(api)
    first = await fetch(api, listener)
    assert first is not None and await fetch(api, listener) is None

    await send(api, "person", "s")  # re-send while the integration is processing
    await settle(api)
    assert await ack(api, first["token"]) is True  # stale: a no-op that still answers true
    second = await fetch(api, listener)
    assert second is not None and second["token"] != first["token"]
    assert await ack(api, second["token"]) is True
    await asyncio.sleep(BACK_OFF + 0.1)
    assert await fetch(api, listener) is None


async def test_coalescing_keeps_the_lower_priority_number(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "s", priority=5)
    await send(api, "person", "s", priority=50)
    await send(api, "person", "t", priority=50)
    await send(api, "person", "t", priority=7)
    await settle(api)
    events = await drain(api, listener)
    assert [(e["subject"], e["priority"]) for e in events] == [("s", 5), ("t", 7)]


async def test_default_priority_is_10000(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await api.data(
        'mutation { event_send(input: {namespace: "mo", routing_key: "person", subject: "s"}) }'
    )
    await settle(api)
    event = await fetch(api, listener)
    assert event is not None and event["priority"] == 10000


async def test_lowest_priority_number_first_in_either_send_order(api: Api) -> None:
    for order in ([1, 2, 3], [3, 2, 1]):
        listener = await declare(api, "person", f"order-{order[0]}")
        for priority in order:
            await send(api, "person", f"p{priority}", priority=priority)
        await settle(api)
        assert [e["priority"] for e in await drain(api, listener)] == [1, 2, 3]


async def test_same_priority_is_oldest_first(api: Api) -> None:
    listener = await declare(api, "person", "l")
    for subject in ("a", "c", "b"):
        await send(api, "person", subject)
        await settle(api)
    assert [e["subject"] for e in await drain(api, listener)] == ["a", "c", "b"]


async def test_unacknowledged_event_returns_after_back_off_with_the_same_token(
    backoff_api: Api,
) -> None:
    api = backoff_api
    listener = await declare(api, "person", "l")
    await send(api, "person", "s")
    await settle(api)
    first = await fetch(api, listener)
    assert first is not None
    assert await fetch(api, listener) is None  # hidden during its back-off
    await asyncio.sleep(BACK_OFF + 0.1)
    again = await fetch(api, listener)
    assert again is not None and again["token"] == first["token"]
    assert await ack(api, again["token"]) is True
    await asyncio.sleep(BACK_OFF + 0.1)
    assert await fetch(api, listener) is None


async def test_fewer_deliveries_come_first_within_a_priority(backoff_api: Api) -> None:
    api = backoff_api
    listener = await declare(api, "person", "l")
    await send(api, "person", "retried")
    await settle(api)
    assert (await fetch(api, listener) or {})["subject"] == "retried"
    await send(api, "other", "x")  # unrelated topic
    await asyncio.sleep(BACK_OFF + 0.1)
    await send(api, "person", "fresh")
    await settle(api)
    assert [e["subject"] for e in await drain(api, listener)] == ["fresh", "retried"]


async def test_silenced_events_come_after_unsilenced_ones_but_still_come(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "loud", priority=100)
    await send(api, "person", "quiet", priority=1)
    await settle(api)
    await api.data(
        clients.SILENCE, {"input": {"listeners": {"uuids": [listener]}, "subjects": ["quiet"]}}
    )
    assert [e["subject"] for e in await drain(api, listener)] == ["loud", "quiet"]
    listing = await api.data(
        clients.GET_LISTENERS, {"filter": {"uuids": [listener]}, "event_filter": {"silenced": True}}
    )
    events = listing["event_listeners"]["objects"][0]["events"]
    assert events == [{"silenced": True, "priority": 1, "subject": "quiet"}]


async def test_resend_keeps_the_silenced_flag(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "quiet")
    await settle(api)
    await api.data(
        clients.SILENCE, {"input": {"listeners": {"uuids": [listener]}, "subjects": ["quiet"]}}
    )
    await send(api, "person", "quiet")
    await settle(api)
    events = await api.data(
        "query($l: UUID!) { events(filter: {listeners: {uuids: [$l]}}) { objects { silenced } } }",
        {"l": listener},
    )
    assert events["events"]["objects"] == [{"silenced": True}]


async def test_unsilence_makes_a_waiting_event_fetchable_at_once(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "s")
    await settle(api)
    await api.data(
        clients.SILENCE, {"input": {"listeners": {"uuids": [listener]}, "subjects": ["s"]}}
    )
    fetched = await fetch(api, listener)
    assert fetched is not None and await fetch(api, listener) is None
    await api.data(clients.UNSILENCE, {"input": {"subjects": ["s"]}})
    again = await fetch(api, listener)
    assert again is not None and again["token"] == fetched["token"]


async def test_rerun_returns_touched_events_and_makes_them_fetchable(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "a", priority=3)
    await send(api, "person", "b", priority=4)
    await settle(api)
    assert len(await drain(api, listener)) == 2
    rerun = await api.data(clients.RERUN, {"input": {"priorities": [3]}})
    assert rerun["event_rerun"] == [{"priority": 3, "silenced": False, "subject": "a"}]
    assert [e["subject"] for e in await drain(api, listener)] == ["a"]


async def test_delete_listener_with_pending_events(api: Api) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "s")
    await settle(api)
    keep = {"listener_uuid": listener, "delete_pending_events": False}
    message = await api.error(clients.DELETE_LISTENER, keep)
    assert message.startswith("There are pending events for this listener.")
    assert message.endswith("You can delete the listener anyway with `delete_pending_events`.")
    assert await fetch(api, listener) is not None  # refused: still there

    force = {"listener_uuid": listener, "delete_pending_events": True}
    assert (await api.data(clients.DELETE_LISTENER, force))["event_listener_delete"] is True
    assert await fetch(api, listener) is None
    assert (await api.data(clients.DELETE_LISTENER, force))["event_listener_delete"] is True
    await send(api, "person", "after-delete")
    await settle(api)
    assert (await api.data("{ events { objects { subject } } }"))["events"]["objects"] == []


async def test_namespace_delete_is_refused_while_listeners_exist(api: Api) -> None:
    await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": "sd", "public": False}})
    listener = await declare(api, "org", "l", namespace="sd")
    delete = 'mutation { event_namespace_delete(input: {name: "sd"}) }'
    assert await api.error(delete) == (
        "There are still listeners for this namespace. Use the `event_listener_delete` mutator."
    )
    await api.data(
        clients.DELETE_LISTENER, {"listener_uuid": listener, "delete_pending_events": False}
    )
    assert (await api.data(delete))["event_namespace_delete"] is True
    assert (await api.data('mutation { event_namespace_delete(input: {name: "sd"}) }')) == {
        "event_namespace_delete": True
    }
    assert (
        await api.error(
            clients.SEND,
            {"input": {"namespace": "sd", "routing_key": "org", "subject": "s", "priority": 1}},
        )
        == "Namespace does not exist."
    )


async def test_events_pages_never_skip_or_repeat_while_events_come_and_go(api: Api) -> None:
    listener = await declare(api, "person", "l")
    for i in range(10):
        await send(api, "person", f"s{i:02}")
    await settle(api)
    page_query = """
      query($cursor: Cursor) {
        events(limit: 3, cursor: $cursor) { objects { subject } page_info { next_cursor } }
      }"""
    seen: list[str] = []
    cursor = None
    while True:
        page = (await api.data(page_query, {"cursor": cursor}))["events"]
        seen += [event["subject"] for event in page["objects"]]
        if len(seen) == 3:
            # Churn between pages: a new subject, and an acknowledged one already seen.
            await send(api, "person", "s00a")
            await settle(api)
            first = await fetch(api, listener)
            assert first is not None
            await ack(api, first["token"])
        cursor = page["page_info"]["next_cursor"]
        if cursor is None:
            break
    survivors = [f"s{i:02}" for i in range(10)]
    assert all(seen.count(subject) == 1 for subject in survivors if subject in seen)
    assert set(survivors[1:]) <= set(seen)


async def test_last_page_has_no_next_cursor(api: Api) -> None:
    await declare(api, "person", "l")
    for i in range(4):
        await send(api, "person", f"s{i}")
    await settle(api)
    query = "query { events(limit: 4) { objects { subject } page_info { next_cursor } } }"
    page = (await api.data(query))["events"]
    assert len(page["objects"]) == 4 and page["page_info"]["next_cursor"] is None
    bad = await api.error('{ events(cursor: "nonsense") { objects { subject } } }')
    assert "Cursor" in bad


async def test_listing_filters(api: Api) -> None:
    await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": "sd", "public": True}})
    person = await declare(api, "person", "p")
    await declare(api, "org", "o", namespace="sd")
    by_namespace = await api.data(
        '{ event_listeners(filter: {namespaces: {names: ["sd"]}}) { objects { user_key } } }'
    )
    assert by_namespace["event_listeners"]["objects"] == [{"user_key": "o"}]
    nothing = await api.data("{ event_listeners(filter: {uuids: []}) { objects { uuid } } }")
    assert nothing["event_listeners"]["objects"] == []
    nested = await api.data(
        '{ event_namespaces(filter: {names: ["MO"]}) { objects { name listeners { uuid } } } }'
    )
    assert nested["event_namespaces"]["objects"] == [
        {"name": "mo", "listeners": [{"uuid": person}]}
    ]
    public = await api.data("{ event_namespaces(filter: {public: true}) { objects { name } } }")
    assert {o["name"] for o in public["event_namespaces"]["objects"]} == {"mo", "sd"}
    me = await api.data(clients.ME)
    assert {n["name"] for n in me["me"]["actor"]["event_namespaces"]} == {"sd"}


async def test_long_poll_returns_as_soon_as_an_event_is_sent(api: Api) -> None:
    listener = await declare(api, "person", "l")
    query = "query($l: UUID!) { event_fetch(filter: {listener: $l, wait: 10}) { subject } }"
    waiting = asyncio.create_task(api.data(query, {"l": listener}))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await send(api, "person", "s")
    assert (await asyncio.wait_for(waiting, 5))["event_fetch"] == {"subject": "s"}


async def test_long_poll_returns_when_a_back_off_ends(backoff_api: Api) -> None:
    api = backoff_api
    listener = await declare(api, "person", "l")
    await send(api, "person", "s")
    await settle(api)
    assert await fetch(api, listener) is not None
    query = "query($l: UUID!) { event_fetch(filter: {listener: $l, wait: 5}) { subject } }"
    result = await asyncio.wait_for(api.data(query, {"l": listener}), 4)
    assert result["event_fetch"] == {"subject": "s"}


async def test_long_poll_gives_null_at_the_deadline_and_never_waits_for_foreign(
    make_api: MakeApi,
) -> None:
    api = await make_api(fetch_max_wait_seconds=0.2)
    listener = await declare(api, "person", "l")
    query = "query($l: UUID!) { event_fetch(filter: {listener: $l, wait: 60}) { subject } }"
    assert (await asyncio.wait_for(api.data(query, {"l": listener}), 3))["event_fetch"] is None
    unknown = {"l": "7f1d1a52-8d3a-4e0b-9c61-0f4b9b3c2d1e"}
    assert (await asyncio.wait_for(api.data(query, unknown), 1))["event_fetch"] is None
    negative = "query($l: UUID!) { event_fetch(filter: {listener: $l, wait: -1}) { subject } }"
    assert await api.error(negative, {"l": listener}) == "wait must not be negative"


async def test_unsilence_also_makes_a_matching_unsilenced_event_fetchable_at_once(
    api: Api,
) -> None:
    listener = await declare(api, "person", "l")
    await send(api, "person", "s")
    await settle(api)
    fetched = await fetch(api, listener)
    assert fetched is not None and await fetch(api, listener) is None
    await api.data(clients.UNSILENCE, {"input": {"listeners": {"uuids": [listener]}}})
    again = await fetch(api, listener)
    assert again is not None and again["token"] == fetched["token"]
