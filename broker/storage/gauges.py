"""What a stats snapshot (broker/stats.py) reads from Redis: pending events, fan-out lag."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from uuid import UUID

from broker.models import Listener
from broker.storage.store import Store, stream_id_order

# Oldest events looked at to tell the oldest silenced from the oldest unsilenced one.
STATS_SCAN = 32
# Listeners read per round of a snapshot.
SNAPSHOT_PAGE = 1000


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


@dataclass(frozen=True)
class Snapshot:
    """Values read from Redis in one go, for the metrics and the console."""

    listeners: list[tuple[Listener, ListenerStats]]
    ingest: list[IngestLag]
    now: float

    @cached_property
    def stats_of(self) -> dict[UUID, ListenerStats]:
        """The listeners' figures by uuid (made on first use: the metrics never need it)."""
        return {listener.uuid: stats for listener, stats in self.listeners}


async def read_snapshot(store: Store) -> Snapshot:
    """Every listener's pending counts and the fan-out lag.

    Read a page of listeners at a time (index page, records, stats: a few pipelined
    round trips per `SNAPSHOT_PAGE` listeners), so memory and round trips grow in steps
    and other requests are served between the pages.
    """
    listeners: list[tuple[Listener, ListenerStats]] = []
    after: str | None = None
    while uuids := await store.index_page([store.keys.listener_order], after, SNAPSHOT_PAGE):
        found = await store.indexed_listeners(uuids)
        stats = await listener_stats(store, [listener.uuid for listener in found])
        listeners += zip(found, stats, strict=True)
        if len(uuids) < SNAPSHOT_PAGE:
            break
        after = uuids[-1]
    ingest = await ingest_lag(store)
    return Snapshot(listeners, ingest, time.time())


async def listener_stats(store: Store, listeners: Sequence[UUID]) -> list[ListenerStats]:
    """Pending counts and oldest creation times (see `Store.listener_figures`).

    The oldest silenced and unsilenced events are told apart among the `STATS_SCAN`
    oldest events only; a kind not found there gets the overall oldest (an
    approximation that can only make it look older than it is). None for a listener
    whose state cannot be read (skipped, counted and logged by the store).
    """
    return [
        ListenerStats(*figures) for figures in await store.listener_figures(listeners, STATS_SCAN)
    ]


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
