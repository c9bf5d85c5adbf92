"""What the metrics' gauges read from Redis at each scrape: pending events and fan-out lag."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from broker.models import Listener
from broker.store import DECODE_ERRORS, Store, stream_id_order, subject_of

# Oldest events looked at to tell the oldest silenced from the oldest unsilenced one.
STATS_SCAN = 32
STATS_BATCH = 500


@dataclass(frozen=True, slots=True)
class ListenerStats:
    """A listener's pending events, split by silenced, for the metrics."""

    pending: int
    silenced: int
    oldest_ms: int | None  # creation ms of the oldest unsilenced pending event
    oldest_silenced_ms: int | None


@dataclass(frozen=True, slots=True)
class IngestLag:
    """What one ingest shard still has to fan out."""

    entries: int
    oldest_ms: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Values read from Redis for one scrape."""

    listeners: list[tuple[Listener, ListenerStats]]
    ingest: list[IngestLag]
    now: float


async def read_snapshot(store: Store) -> Snapshot:
    """The scrape-time values: every listener's pending counts and the fan-out lag."""
    listeners = await store.all_listeners()
    stats = await listener_stats(store, [listener.uuid for listener in listeners])
    ingest = await ingest_lag(store)
    readable = [
        (listener, found)
        for listener, found in zip(listeners, stats, strict=True)
        if found is not None
    ]
    return Snapshot(readable, ingest, time.time())


async def listener_stats(store: Store, listeners: Sequence[UUID]) -> list[ListenerStats | None]:
    """Pending counts and oldest creation times; a few round trips per 500 listeners.

    The oldest silenced and unsilenced events are told apart among the `STATS_SCAN`
    oldest events only; a kind not found there gets the overall oldest (an
    approximation that can only make it look older than it is). None for a listener
    whose state cannot be read (skipped, counted and logged by the store).
    """
    stats: list[ListenerStats | None] = []
    for start in range(0, len(listeners), STATS_BATCH):
        stats += await _listener_stats(store, listeners[start : start + STATS_BATCH])
    return stats


async def _listener_stats(store: Store, listeners: Sequence[UUID]) -> list[ListenerStats | None]:
    keys = [store.keys.listener(uuid) for uuid in listeners]
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key.meta, "silenced")
            pipe.hlen(key.events)
            pipe.zrange(key.index, 0, 0)
        replies = await pipe.execute()
    counts: list[tuple[int, int, int | None] | None] = []
    for i in range(len(keys)):
        silenced, pending, first = replies[3 * i : 3 * i + 3]
        try:
            oldest = int(first[0].split(":", 1)[0]) if first else None
            counts.append((int(pending), min(int(silenced or 0), int(pending)), oldest))
        except DECODE_ERRORS as error:
            store.unreadable("listener_state", keys[i].meta, error)
            counts.append(None)
    # Both kinds pending: look at the oldest few to find each kind's oldest.
    mixed = [i for i, count in enumerate(counts) if count is not None and 0 < count[1] < count[0]]
    split: dict[int, tuple[int | None, int | None]] = {}
    if mixed:
        async with store.redis.pipeline(transaction=False) as pipe:
            for i in mixed:
                pipe.zrange(keys[i].index, 0, STATS_SCAN - 1)
            members = await pipe.execute()
        scanned = [(i, found) for i, found in zip(mixed, members, strict=True) if found]
        async with store.redis.pipeline(transaction=False) as pipe:
            for i, found in scanned:
                pipe.hmget(keys[i].events, [subject_of(key) for key in found])
            records = await pipe.execute()
        for (i, found), packed in zip(scanned, records, strict=True):
            oldest_of: dict[bool, int] = {}
            for key, record in zip(found, packed, strict=True):
                event = store.pending_event(listeners[i], keys[i].events, subject_of(key), record)
                if event is not None:
                    oldest_of.setdefault(event.silenced, event.created_ms)
            split[i] = (oldest_of.get(False), oldest_of.get(True))
    stats: list[ListenerStats | None] = []
    for i, count in enumerate(counts):
        if count is None:
            stats.append(None)
            continue
        pending, silenced, oldest = count
        if i in split:
            loud, quiet = split[i]
            stats.append(ListenerStats(pending, silenced, loud or oldest, quiet or oldest))
        else:
            loud_oldest = oldest if pending > silenced else None
            quiet_oldest = oldest if silenced else None
            stats.append(ListenerStats(pending, silenced, loud_oldest, quiet_oldest))
    return stats


async def ingest_lag(store: Store) -> list[IngestLag]:
    """Per ingest shard: entries not yet fanned out, and the oldest one's time."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for shard in range(store.keys.shards):
            pipe.xlen(store.keys.ingest(shard))
            pipe.xrange(store.keys.ingest(shard), count=1)
        replies = await pipe.execute()
    lag = []
    for shard in range(store.keys.shards):
        entries, first = replies[2 * shard : 2 * shard + 2]
        oldest = stream_id_order(first[0][0])[0] if first else None
        lag.append(IngestLag(int(entries), oldest))
    return lag
