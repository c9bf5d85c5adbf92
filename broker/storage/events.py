"""Pending events: one atomic script per operation in the listener's slot, and keyset paging."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from broker.models import EventSelection, PendingEvent
from broker.storage import records
from broker.storage.base import DECODE_ERRORS, StoreBase, now_ms, owner_arg

UpdateAction = Literal["silence", "unsilence", "rerun"]
# Due retries moved back into lanes per fetch: bounds the cost of one fetch.
RETRY_PUMP_BATCH = 32
# Index entries read per round trip while listing.
_PAGE = 500
# Entries one subject search looks at per HSCAN call.
_SEARCH_SCAN = 1000
# What a listener's index holds when the broker did not write it: a member that is not
# UTF-8 (redis-py fails the whole reply), a score that is no finite number of ms.
UNREADABLE_INDEX = (UnicodeDecodeError, ValueError, OverflowError)


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch found: an event, or when the next one is due."""

    event: PendingEvent | None
    next_due_ms: int | None = None  # with no event: when a back-off ends, if any
    owned: bool = True  # False: unknown listener or another owner's


def _order_key(event: PendingEvent) -> str:
    return records.order_key(event.created_ms, event.subject)


class Events(StoreBase):
    """A listener's pending events: send, fetch, acknowledge, change, and list them."""

    async def send(self, namespace: str, routing_key: str, subject: str, priority: int) -> bool:
        """Append to the topic's ingest stream; False when no listener exists (dropped)."""
        shard = self.keys.shard_of(namespace, routing_key)
        entry = await self.pipeliner.call(
            self._send,
            [self.keys.topic(namespace, routing_key), self.keys.ingest(shard)],
            [namespace, routing_key, subject, priority],
            confirm=True,
        )
        return entry is not None

    async def fetch(
        self, listener: UUID, owner: UUID | None, retry_min_ms: int, retry_max_ms: int
    ) -> Fetched:
        reply = await self.pipeliner.call(
            self._fetch,
            self.keys.listener(listener).as_list(),
            [owner_arg(owner), retry_min_ms, retry_max_ms, RETRY_PUMP_BATCH],
        )
        if reply is None:
            return Fetched(None, owned=False)
        if len(reply) < 2:
            return Fetched(None, int(float(reply[0])) if reply else None)
        subject, priority, gen, silenced, created, deliveries = reply
        event = PendingEvent(
            listener=listener,
            subject=subject,
            priority=int(priority),
            silenced=int(silenced) == 1,
            generation=str(gen),
            created_ms=int(float(created)),
            deliveries=int(deliveries),
        )
        return Fetched(event)

    async def acknowledge(
        self, listener: UUID, owner: UUID | None, subject: str, generation: str
    ) -> bool:
        deleted = await self.pipeliner.call(
            self._acknowledge,
            self.keys.listener(listener).as_list(),
            [owner_arg(owner), subject, generation, now_ms()],
            confirm=True,
        )
        return bool(deleted)

    async def update(
        self,
        listener: UUID,
        action: UpdateAction,
        selection: EventSelection,
        subjects: Sequence[str],
    ) -> list[PendingEvent]:
        """Silence/unsilence/rerun those of `subjects` that match; return what changed."""
        if not subjects:
            return []
        priorities = [] if selection.priorities is None else sorted(selection.priorities)
        silenced = "" if selection.silenced is None else str(int(selection.silenced))
        args: list[Any] = [
            action,
            silenced,
            -1 if selection.priorities is None else len(priorities),
        ]
        reply = await self._written(
            self._update,
            keys=self.keys.listener(listener).as_list(),
            args=[*args, *priorities, *subjects],
        )
        return [
            records.pending_event(listener, reply[i], reply[i + 1], int(float(reply[i + 2])))
            for i in range(0, len(reply), 3)
        ]

    async def order_keys(self, listener: UUID, after: str | None, count: int) -> list[str]:
        """Order keys (records.py) of a listener's pending events, strictly after `after`.

        `after` must be an order key (`records.parse_order_key`): callers check cursors.
        """
        return [
            records.order_key(created, subject)
            for subject, created in await self._index_page(listener, after, count)
        ]

    async def _index_page(
        self, listener: UUID, after: str | None, count: int
    ) -> list[tuple[str, int]]:
        """(subject, created ms) of pending events in order, strictly after order key `after`."""
        cursor = ("", "") if after is None else records.parse_order_key(after)
        if cursor is None:
            raise ValueError(f"not an order key: {after!r}")
        index = self.keys.listener(listener).index
        try:
            reply = await self._page(keys=[index], args=[*cursor, count])
            return [(reply[i], int(float(reply[i + 1]))) for i in range(0, len(reply), 2)]
        except UNREADABLE_INDEX as error:  # not written by the broker: its events go unlisted
            self.unreadable("event index", index, error)
            return []

    async def pending(
        self, listener: UUID, selection: EventSelection, after: str | None, limit: int | None
    ) -> list[PendingEvent]:
        """Matching pending events in order-key order after `after`; O(events scanned)."""
        if selection.subjects is not None:
            # Few subjects named: look them up instead of scanning the index.
            found = sorted(
                (
                    event
                    for event in await self._lookup(listener, sorted(selection.subjects))
                    if selection.matches(event) and (after is None or _order_key(event) > after)
                ),
                key=_order_key,
            )
            return found if limit is None else found[:limit]
        found = []
        while limit is None or len(found) < limit:
            page = await self._index_page(listener, after, _PAGE)
            if not page:
                break
            for event in await self._events(listener, page):
                if selection.matches(event):
                    found.append(event)
                    if limit is not None and len(found) == limit:
                        break
            after = records.order_key(page[-1][1], page[-1][0])
        return found

    async def search_pending(self, listener: UUID, text: str, limit: int) -> list[PendingEvent]:
        """Up to `limit` pending events whose subject contains `text`; O(pending events)."""
        glob = "*" + "".join("\\" + c if c in "*?[]\\" else c for c in text) + "*"
        events_key = self.keys.listener(listener).events
        found: list[PendingEvent] = []
        cursor = 0
        while True:
            cursor, page = await self.redis.hscan(
                events_key, cursor, match=glob, count=_SEARCH_SCAN
            )
            found += await self._lookup(listener, list(page))
            if cursor == 0 or len(found) >= limit:
                break
        return sorted(found, key=_order_key)[:limit]

    async def _lookup(self, listener: UUID, subjects: Sequence[str]) -> list[PendingEvent]:
        """The pending events of those `subjects` that have one (and a readable record)."""
        if not subjects:
            return []
        index = self.keys.listener(listener).index
        try:
            scores = await self.redis.zmscore(index, list(subjects))
            indexed = [
                (subject, int(score))
                for subject, score in zip(subjects, scores, strict=True)
                if score is not None
            ]
        except UNREADABLE_INDEX as error:
            self.unreadable("event index", index, error)
            return []
        return await self._events(listener, indexed)

    async def _events(
        self, listener: UUID, indexed: Sequence[tuple[str, int]]
    ) -> list[PendingEvent]:
        """The pending events of (subject, created ms) pairs read from `index`, in that order.

        One that is gone since, or whose record cannot be read, is left out.
        """
        if not indexed:
            return []
        events_key = self.keys.listener(listener).events
        packed = await self.redis.hmget(events_key, [subject for subject, _ in indexed])
        found = []
        for (subject, created), record in zip(indexed, packed, strict=True):
            if record is None:
                continue
            try:
                found.append(records.pending_event(listener, subject, record, created))
            except DECODE_ERRORS as error:
                self.unreadable("event", f"{events_key}[{subject}]", error)
        return found

    async def retry_at(self, listener: UUID, subjects: Sequence[str]) -> list[int | None]:
        """When each subject's back-off ends (ms), `None` for those not waiting one."""
        if not subjects:
            return []
        scores = await self.redis.zmscore(self.keys.listener(listener).retry, list(subjects))
        return [None if score is None else int(score) for score in scores]

    async def count_pending(self, listener: UUID) -> int:
        return int(await self.redis.hlen(self.keys.listener(listener).events))
