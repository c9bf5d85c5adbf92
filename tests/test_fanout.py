"""The fan-out writer: repeats are harmless, crashes lose nothing, order does not matter."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

from redis.asyncio import Redis

from broker.fanout import FanOut
from broker.models import Caller
from broker.storage.keys import Keys
from broker.storage.records import Record
from broker.storage.store import FANOUT_GROUP, IngestEntry, Store
from broker.tokens import EventToken
from tests.stepped import Stepped, check_listener, records, stepped_broker

OWNER = Caller(uuid4(), mo_emitter=True)
HOUR = 3600.0


async def declare(system: Stepped, user_key: str) -> UUID:
    return (await system.broker.declare_listener(OWNER, "mo", user_key, "person")).uuid


async def send(system: Stepped, subject: str, priority: int = 10) -> None:
    await system.broker.send(OWNER, "mo", "person", subject, priority)


async def read_ingest(system: Stepped, consumer: str) -> tuple[int, list[IngestEntry]]:
    """What one fan-out worker reads (and now holds) of the `mo`/`person` shard."""
    shard = system.store.keys.shard_of("mo", "person")
    return shard, await system.store.read_ingest(shard, consumer, 1000, None)  # type: ignore[arg-type]


async def pending(system: Stepped, listener: UUID) -> dict[str, Record]:
    return await check_listener(system.redis, system.store.keys.listener(listener))


async def drain(system: Stepped, listener: UUID) -> list[tuple[str, int]]:
    fetched = []
    while (event := await system.broker.fetch(OWNER, listener)) is not None:
        fetched.append((event.subject, event.priority))
    return fetched


async def test_processing_the_same_entries_twice_changes_nothing_the_second_time(
    redis: Any,
) -> None:
    async with stepped_broker(redis, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
        listeners = [await declare(system, "first"), await declare(system, "second")]
        await send(system, "a", 5)
        await send(system, "b", 5)
        await send(system, "a", 3)  # coalesces with the first, in the same batch
        shard, entries = await read_ingest(system, "worker")
        assert len(entries) == 3

        await system.fanout.process(shard, entries)
        delivered = await system.broker.fetch(OWNER, listeners[0])
        assert delivered is not None and delivered.subject == "a"
        once = [await pending(system, listener) for listener in listeners]
        await system.fanout.process(shard, entries)
        twice = [await pending(system, listener) for listener in listeners]

        assert twice == once  # same generation, same stream entry, same everything
        assert {s: r.priority for s, r in once[1].items()} == {"a": 3, "b": 5}
        assert await drain(system, listeners[0]) == [("b", 5)]  # `a` is still in back-off
        token = EventToken(listeners[0], delivered.generation, "a")
        await system.broker.acknowledge(OWNER, token)
        assert set(await pending(system, listeners[0])) == {"b"}, "the token is still current"


async def test_entries_a_crashed_worker_held_are_taken_over_and_delivered(redis: Any) -> None:
    async with stepped_broker(redis, fanout_claim_idle_seconds=0.1) as system:
        first, second = await declare(system, "first"), await declare(system, "second")
        subjects = {f"s{n}" for n in range(20)}
        for subject in sorted(subjects):
            await send(system, subject)
        # The crashed worker read everything and applied it to one listener only.
        shard, entries = await read_ingest(system, "crashed-worker")
        assert len(entries) == len(subjects)
        await system.store.apply(first, entries)
        before = await pending(system, first)

        survivor = FanOut(system.store, system.fanout.settings)
        survivor.start()
        try:
            for _ in range(500):
                if await system.store.ingest_backlog(shard) == 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            await survivor.stop(5.0)

        assert await system.store.ingest_backlog(shard) == 0
        assert await pending(system, first) == before, "the repeat changed nothing"
        assert set(await pending(system, second)) == subjects
        assert {subject for subject, _ in await drain(system, second)} == subjects


async def test_a_late_older_entry_keeps_the_lower_priority_and_the_newer_generation(
    redis: Any,
) -> None:
    async with stepped_broker(redis, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
        listener = await declare(system, "l")
        await send(system, "s", 2)
        await send(system, "s", 7)
        shard, (older, newer) = await read_ingest(system, "worker")

        await system.fanout.process(shard, [newer])
        generation = (await pending(system, listener))["s"].generation
        await system.fanout.process(shard, [older])

        after = (await pending(system, listener))["s"]
        assert (after.priority, after.generation) == (2, generation)
        event = await system.broker.fetch(OWNER, listener)
        assert event is not None and (event.priority, event.generation) == (2, generation)


async def test_an_older_entry_applied_late_does_not_deliver_again(redis: Any) -> None:
    async with stepped_broker(redis, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
        listener = await declare(system, "l")
        await send(system, "s", 2)
        await send(system, "s", 7)
        shard, (older, newer) = await read_ingest(system, "worker")
        await system.fanout.process(shard, [newer])
        delivered = await system.broker.fetch(OWNER, listener)
        assert delivered is not None

        await system.fanout.process(shard, [older])
        assert await system.broker.fetch(OWNER, listener) is None
        await system.broker.acknowledge(OWNER, EventToken(listener, delivered.generation, "s"))
        assert await pending(system, listener) == {}


async def test_a_listener_deleted_while_registered_is_dropped_from_its_topic(redis: Any) -> None:
    async with stepped_broker(redis) as system:
        gone, staying = await declare(system, "gone"), await declare(system, "staying")
        # The broker stopped between deleting the state and unsubscribing it.
        assert await system.store.delete_listener_state(gone, None, True) == 1
        assert gone in await system.store.topic_listeners("mo", "person")

        await send(system, "s")
        await system.fan_out()

        assert set(await system.store.topic_listeners("mo", "person")) == {staying}
        assert set(await pending(system, staying)) == {"s"}
        assert await records(system.redis, system.store.keys.listener(gone)) == {}
        assert not await system.redis.exists(system.store.keys.listener(gone).meta)


async def test_an_event_accepted_before_a_listener_is_declared_skips_it_even_if_fanned_out_later(
    redis: Any,
) -> None:
    async with stepped_broker(redis) as system:
        early = await declare(system, "early")
        await send(system, "before")
        late = await declare(system, "late")
        await send(system, "after")
        await system.fan_out()

        assert set(await pending(system, early)) == {"before", "after"}
        assert set(await pending(system, late)) == {"after"}


async def test_consumers_left_behind_by_gone_workers_are_forgotten(redis: Redis) -> None:
    store = Store(redis, Keys("broker", 1))
    await store.setup()
    await store.read_ingest(0, "gone-worker", count=10, block_ms=1)
    ingest = store.keys.ingest(0)
    assert [c["name"] for c in await redis.xinfo_consumers(ingest, FANOUT_GROUP)] == ["gone-worker"]
    assert await store.forget_idle_consumers(0, idle_ms=3_600_000) == 0  # recently active
    await asyncio.sleep(0.01)
    assert await store.forget_idle_consumers(0, idle_ms=1) == 1
    assert await redis.xinfo_consumers(ingest, FANOUT_GROUP) == []
