"""Keyset paging of a listener's pending events by (creation time, subject)."""

from __future__ import annotations

import random
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis

from broker.models import Caller, EventSelection, PendingEvent
from broker.storage import records
from broker.storage.store import IngestEntry
from tests.stepped import Stepped, stepped_broker

pytestmark = pytest.mark.cluster
OWNER = Caller(uuid4(), mo_emitter=True)
# Many events in one millisecond (ties), a few around it, subjects that sort differently
# by bytes than by Lua's locale-aware `<` would ("B" < "a", "é" after "z").
SUBJECTS = ["a", "B", "b", "z", "é", "a:b", "a b", "ab", "", "0", "~"] + [
    f"s{i}" for i in range(40)
]


async def _listener_with_ties(system: Stepped) -> UUID:
    listener = (await system.broker.declare_listener(OWNER, "mo", "pager", "person")).uuid
    rng = random.Random(7)
    entries = [
        IngestEntry(f"{1000 + (i % 3 == 0) * rng.choice([-1, 1])}-{i}", "mo", "person", s, 10)
        for i, s in enumerate(SUBJECTS)
    ]
    rng.shuffle(entries)
    assert await system.store.apply(listener, entries) == len(SUBJECTS)
    return listener


def _in_order(events: list[PendingEvent]) -> list[tuple[int, bytes]]:
    return sorted((event.created_ms, event.subject.encode()) for event in events)


async def test_pages_follow_creation_time_then_subject_bytes(redis: Redis) -> None:
    async with stepped_broker(redis) as system:
        listener = await _listener_with_ties(system)
        everything = await system.store.pending(listener, EventSelection(), None, None)
        assert [(e.created_ms, e.subject.encode()) for e in everything] == _in_order(everything)
        paged: list[PendingEvent] = []
        after = None
        while page := await system.store.pending(listener, EventSelection(), after, 4):
            paged += page
            after = records.order_key(page[-1].created_ms, page[-1].subject)
        assert paged == everything


async def test_a_page_after_an_acknowledged_cursor_event_skips_and_repeats_nothing(
    redis: Redis,
) -> None:
    async with stepped_broker(redis) as system:
        listener = await _listener_with_ties(system)
        everything = await system.store.pending(listener, EventSelection(), None, None)
        paged: list[PendingEvent] = []
        after = None
        while page := await system.store.pending(listener, EventSelection(), after, 3):
            paged += page
            last = page[-1]
            after = records.order_key(last.created_ms, last.subject)
            # The cursor's own event goes before the next page is read.
            assert await system.store.acknowledge(listener, None, last.subject, last.generation)
        assert paged == everything


async def test_an_event_missing_from_the_index_is_fetched_and_indexed_again(redis: Redis) -> None:
    async with stepped_broker(redis) as system:
        listener = (await system.broker.declare_listener(OWNER, "mo", "lost", "person")).uuid
        assert await system.store.apply(listener, [IngestEntry("5-0", "mo", "person", "s", 1)])
        await redis.zrem(system.store.keys.listener(listener).index, "s")
        fetched = await system.store.fetch(listener, None, 600_000, 600_000)
        assert fetched.event is not None and fetched.event.subject == "s"
        assert fetched.event.created_ms > 5  # when it was found again
        listed = await system.store.pending(listener, EventSelection(), None, None)
        assert [event.subject for event in listed] == ["s"]
