"""Idle polls skip Redis, and never hide an event that a process has been told about."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from broker.notify import Notifier
from broker.operations import LONG_POLL_RECHECK_SECONDS
from broker.storage.store import IngestEntry
from tests import clients
from tests.clients import declare, send, settle
from tests.conftest import BACK_OFF, Api

pytestmark = pytest.mark.cluster

LONG_POLL = """
query LongPoll($listener: UUID!) {
  event_fetch(filter: {listener: $listener, wait: 30}) { subject }
}
"""


def state(api: Api) -> dict[str, Any]:
    state: dict[str, Any] = api.app.state.broker_state
    return state


async def subscribed(to: Api | Notifier) -> Notifier:
    """The app's (or this) notifier, once its subscription is up."""
    notifier: Notifier = to if isinstance(to, Notifier) else state(to)["notifier"]
    for _ in range(200):
        if notifier.subscribed:
            return notifier
        await asyncio.sleep(0.01)
    raise AssertionError("the notifier did not subscribe")


def count_store_fetches(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    store = state(api)["store"]
    calls: list[UUID] = []
    real = store.fetch

    async def fetch(listener: UUID, *args: Any) -> Any:
        calls.append(listener)
        return await real(listener, *args)

    monkeypatch.setattr(store, "fetch", fetch)
    return calls


@pytest.mark.parametrize(("cache_seconds", "redis_fetches"), [(30, 1), (0, 5)])
async def test_polls_of_an_idle_listener_reach_redis_once_unless_the_memory_is_off(
    make_api: Any, monkeypatch: pytest.MonkeyPatch, cache_seconds: float, redis_fetches: int
) -> None:
    api = await make_api(fetch_empty_cache_seconds=cache_seconds)
    listener = await declare(api, "person", "idle")
    await subscribed(api)
    calls = count_store_fetches(api, monkeypatch)
    for _ in range(5):
        assert await clients.fetch(api, listener) is None
    assert len(calls) == redis_fetches


async def test_an_event_sent_after_an_empty_poll_is_fetched_at_once(api: Api) -> None:
    listener = await declare(api, "person", "idle")
    await subscribed(api)
    assert await clients.fetch(api, listener) is None
    await send(api, "person", "s1")
    await settle(api)
    event = await clients.fetch(api, listener)
    assert event is not None and event["subject"] == "s1"


async def test_an_event_another_process_stored_arrives_with_its_wake_up(
    api: Api, redis: Redis
) -> None:
    """Stored behind this process' back, the event waits for the wake-up, then comes."""
    listener = await declare(api, "person", "idle")
    notifier = await subscribed(api)
    assert await clients.fetch(api, listener) is None
    # What another process' fan-out does: store the event, then publish the listener.
    entry = IngestEntry(f"{int(time.time() * 1000)}-0", "mo", "person", "elsewhere", 1)
    assert await state(api)["store"].apply(UUID(listener), [entry]) == 1
    assert await clients.fetch(api, listener) is None  # remembered as empty: no wake-up yet
    await redis.publish(notifier.channel, listener)
    for _ in range(200):
        event = await clients.fetch(api, listener)
        if event is not None:
            break
        await asyncio.sleep(0.01)
    assert event is not None and event["subject"] == "elsewhere"


async def test_an_ended_back_off_is_not_hidden(backoff_api: Api) -> None:
    api = backoff_api
    listener = await declare(api, "person", "retrying")
    await subscribed(api)
    await send(api, "person", "s1")
    await settle(api)
    first = await clients.fetch(api, listener)
    assert first is not None
    assert await clients.fetch(api, listener) is None  # in its back-off, remembered
    await asyncio.sleep(BACK_OFF + 0.1)
    again = await clients.fetch(api, listener)
    assert again is not None and again["token"] == first["token"]


async def test_a_fetch_that_overlapped_its_listeners_wake_up_is_not_remembered(api: Api) -> None:
    notifier = await subscribed(api)
    listener = UUID(await declare(api, "person", "racing"))
    other = UUID(await declare(api, "person", "other"))
    sequence = notifier.empty.start()  # the fetches start...
    await notifier.publish([listener])  # ...an event is published for one meanwhile...
    notifier.empty.remember(listener, "", sequence, None)  # ...and both found nothing
    notifier.empty.remember(other, "", sequence, None)
    assert notifier.empty.empty_until(listener, "") is None
    assert notifier.empty.empty_until(other, "") is not None  # its own answer still holds
    notifier.empty.remember(listener, "", notifier.empty.start(), None)
    assert notifier.empty.empty_until(listener, "") is not None


async def test_a_fetch_that_overlapped_the_subscription_is_not_remembered(redis: Redis) -> None:
    """Wake-ups published before the subscription is up are lost: forget such answers."""
    notifier = Notifier(redis, "channel", empty_seconds=30)
    listener = UUID(int=2)
    sequence = notifier.empty.start()  # a fetch starts before the subscription is up
    notifier.start()
    try:
        await subscribed(notifier)
        notifier.empty.remember(listener, "", sequence, None)  # and answers after it
        assert notifier.empty.empty_until(listener, "") is None
    finally:
        await notifier.stop()


async def test_a_long_polls_timed_recheck_asks_redis(api: Api) -> None:
    """Stored without a wake-up (one lost), an event still ends a long poll at its re-check."""
    listener = await declare(api, "person", "lost")
    await subscribed(api)
    assert await clients.fetch(api, listener) is None  # remembered as empty
    entry = IngestEntry(f"{int(time.time() * 1000)}-0", "mo", "person", "unannounced", 1)
    assert await state(api)["store"].apply(UUID(listener), [entry]) == 1
    poll = api.data(LONG_POLL, {"listener": listener})
    event = (await asyncio.wait_for(poll, LONG_POLL_RECHECK_SECONDS + 3))["event_fetch"]
    assert event is not None and event["subject"] == "unannounced"


async def test_nothing_is_remembered_while_not_subscribed(redis: Redis) -> None:
    notifier = Notifier(redis, "channel", empty_seconds=30)
    listener = UUID(int=1)
    notifier.empty.remember(listener, "", notifier.empty.start(), None)
    assert notifier.empty.empty_until(listener, "") is None
    notifier.start()
    try:
        await subscribed(notifier)
        notifier.empty.remember(listener, "", notifier.empty.start(), None)
        assert notifier.empty.empty_until(listener, "") is not None
    finally:
        await notifier.stop()
    assert notifier.empty.empty_until(listener, "") is None  # the subscription ended: forgotten


async def test_a_listener_whose_events_were_stored_is_woken_when_another_failed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await declare(api, "person", "stored")
    failing = UUID(await declare(api, "person", "failing"))
    notifier = await subscribed(api)
    assert await clients.fetch(api, stored) is None  # remembered as empty
    store = state(api)["store"]
    real_apply = store.apply

    async def apply(listener: UUID, entries: Any) -> int:
        if listener == failing:
            raise RedisError("this listener's slot is unavailable")
        return int(await real_apply(listener, entries))

    monkeypatch.setattr(store, "apply", apply)
    await send(api, "person", "s1")
    for _ in range(200):
        event = await clients.fetch(api, stored)
        if event is not None:
            break
        await asyncio.sleep(0.01)
    assert event is not None and event["subject"] == "s1"
    assert notifier.subscribed


@pytest.mark.parametrize(("default_wait", "waits"), [(30, True), (0, False)])
async def test_a_fetch_without_wait_waits_the_default_wait_for_an_event(
    make_api: Any, default_wait: float, waits: bool
) -> None:
    """FastRAMQPI's fetch sends no `wait`: BROKER_FETCH_DEFAULT_WAIT_SECONDS long-polls it."""
    api = await make_api(fetch_default_wait_seconds=default_wait)
    listener = await declare(api, "person", "unchanged")
    await subscribed(api)
    poll = asyncio.ensure_future(clients.fetch(api, listener))
    await asyncio.sleep(0.3)  # the poll is under way before the event exists
    await send(api, "person", "s1")
    event = await poll
    if waits:
        assert event is not None and event["subject"] == "s1"
    else:
        assert event is None
