"""A broker whose fan-out runs when the test says so, and a look inside a listener's keys.

`stepped_broker` starts the real app (so it is wired exactly as in production), stops its
background fan-out and lets the test call `fan_out()` instead: no waiting, no races.
`check_listener` asserts DESIGN.md's storage invariants on one listener's keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from broker.app import create_app
from broker.fanout import FanOut
from broker.operations import Broker
from broker.settings import Settings
from broker.storage.keys import ListenerKeys
from broker.storage.records import Record
from broker.storage.store import Store

LANE_GROUP = "g"  # listener.lua's consumer group on every lane


@dataclass
class Stepped:
    broker: Broker
    store: Store
    fanout: FanOut
    redis: Any

    async def fan_out(self, consumer: str = "stepper") -> int:
        """Copy every accepted event to its listeners now; returns the entries processed."""
        processed = 0
        for shard in range(self.store.keys.shards):
            # block_ms=None: no BLOCK argument, so an empty stream answers at once.
            while entries := await self.store.read_ingest(shard, consumer, 1000, None):  # type: ignore[arg-type]
                await self.fanout.process(shard, entries)
                processed += len(entries)
        return processed


@asynccontextmanager
async def stepped_broker(redis: Any, **overrides: Any) -> AsyncIterator[Stepped]:
    settings = Settings(**{"fanout_block_seconds": 0.05, "ingest_shards": 2, **overrides})
    app = create_app(settings, redis=redis)
    async with app.router.lifespan_context(app):
        state = app.state.broker_state
        await state["fanout"].stop(5.0)
        yield Stepped(state["broker"], state["store"], state["fanout"], redis)


def expected_rank(record: Record) -> int:
    """The rank lua/listener.lua places a ready event in."""
    return record.silenced * 2**52 + record.priority * 2**21 + min(record.deliveries, 2**21 - 1)


async def records(redis: Any, keys: ListenerKeys) -> dict[str, Record]:
    raw = await redis.hgetall(keys.events)
    return {subject: Record.unpack(packed) for subject, packed in raw.items()}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def lane_keys(redis: Any, keys: ListenerKeys) -> list[str]:
    return [key async for key in redis.scan_iter(match=_glob_escape(keys.lane_prefix) + "*")]


@dataclass(frozen=True, slots=True)
class LaneEntries:
    subjects: dict[tuple[str, str], str]  # (lane key, entry id) -> subject
    delivered: set[tuple[str, str]]  # (lane key, entry id) in the lane group's PEL


async def lane_entries(redis: Any, keys: ListenerKeys) -> LaneEntries:
    subjects: dict[tuple[str, str], str] = {}
    delivered: set[tuple[str, str]] = set()
    for lane in await lane_keys(redis, keys):
        for entry_id, fields in await redis.xrange(lane):
            subjects[lane, entry_id] = fields["s"]
        for pending in await redis.xpending_range(lane, LANE_GROUP, "-", "+", 1_000_000):
            delivered.add((lane, pending["message_id"]))
    return LaneEntries(subjects, delivered)


async def check_listener(redis: Any, keys: ListenerKeys) -> dict[str, Record]:
    """Assert DESIGN.md invariants 1 and 3 on one listener; return its pending events.

    Every pending event has its record, its index entry and exactly one stream entry; no
    stream entry exists without an event; an event is in `retry` exactly when its entry
    is delivered (in the PEL); an undelivered entry sits in the lane of its current rank,
    and that rank is listed in `lanes` (or fetch would never find it).
    """
    pending = await records(redis, keys)
    index = set(await redis.zrange(keys.index, 0, -1))
    assert index == set(pending)

    entries = await lane_entries(redis, keys)
    assert len(entries.subjects) == len(pending), "stream entries without a pending event"
    ranks = set(await redis.zrange(keys.lanes, 0, -1))
    for subject, record in pending.items():
        where = (keys.lane_prefix + record.lane, record.entry)
        assert entries.subjects.get(where) == subject, (subject, record)
        if where not in entries.delivered:
            assert record.rank == expected_rank(record), (subject, record)
            assert record.lane in ranks, f"{subject} is ready in a lane fetch does not visit"

    retry = set(await redis.zrange(keys.retry, 0, -1))
    in_pel = {
        s for s, r in pending.items() if (keys.lane_prefix + r.lane, r.entry) in entries.delivered
    }
    assert retry == in_pel
    assert len(entries.delivered) == len(in_pel), "a delivered entry no event points at"

    silenced = await redis.hget(keys.meta, "silenced")
    assert int(silenced or 0) == sum(r.silenced for r in pending.values())
    return pending
