"""Domain operations on events: send, fetch, acknowledge, silence, unsilence, rerun, listings.

Every operation takes the `Caller` first, so authentication decides who that is and these
functions decide what that caller may do. Namespaces and listeners (and the ownership rules)
are `broker.registry.Registry`, which `Broker` extends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Sequence
from uuid import UUID

from broker import cursors, errors, inputs
from broker.inputs import MAX_NAME_LENGTH
from broker.metrics import Metrics, listener_labels
from broker.models import (
    MO_NAMESPACE,
    Caller,
    EventSelection,
    Listener,
    ListenerFilter,
    Page,
    PendingEvent,
)
from broker.notify import Notifier
from broker.registry import (
    MAX_LIST_LENGTH,
    MAX_PAGE_SIZE,
    SCAN_BATCH,
    SYSTEM_OWNER,
    Registry,
    canonical_namespace,
    check_list,
    page_size,
    spellings,
)
from broker.settings import Settings
from broker.storage import records
from broker.storage.store import Fetched, Store, UpdateAction
from broker.tokens import EventToken

MAX_SUBJECT_LENGTH = 220
# A long poll re-checks at least this often, in case a notification was lost.
LONG_POLL_RECHECK_SECONDS = 5.0

log = logging.getLogger(__name__)


__all__ = [
    "MAX_LIST_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PAGE_SIZE",
    "SYSTEM_OWNER",
    "Broker",
    "canonical_namespace",
    "check_list",
    "spellings",
]


def cursor_order_key(value: str) -> str | None:
    """An order key (records.py) from a cursor, None for "" (from the first event).

    `InvalidCursor` if it is neither.
    """
    if not value:
        return None
    if records.parse_order_key(value) is None:
        raise errors.InvalidCursor()
    return value


class Broker(Registry):
    """The domain: the registry's operations plus everything done with events."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(store, settings)
        self.notifier = notifier
        self.empty = notifier.empty  # listeners known to have nothing to fetch
        self.metrics = metrics or Metrics()
        # Metric labels of listeners (fixed for a uuid's lifetime), looked up on first ack.
        self._labels: dict[UUID, tuple[str, str, str, str]] = {}
        self.retry_min_ms = int(settings.retry_min_seconds * 1000)
        self.retry_max_ms = int(settings.retry_max_seconds * 1000)

    # Events ---------------------------------------------------------------------------------

    async def send(
        self, caller: Caller, namespace: str, routing_key: str, subject: str, priority: int
    ) -> bool:
        if priority < 1:
            raise errors.PriorityNotNatural()
        if len(subject) > MAX_SUBJECT_LENGTH:
            raise errors.SubjectTooLarge()
        namespace = canonical_namespace(unicodedata.normalize("NFC", namespace))
        routing_key = inputs.name("routing_key", routing_key)
        found = await self.store.get_namespace(namespace)
        if found is None:
            raise errors.NamespaceNotFound()
        allowed = caller.mo_emitter if found.name == MO_NAMESPACE else found.owner == caller.owner
        if not allowed:
            raise errors.NotNamespaceOwner()
        with self.metrics.timed("send"):
            await self.store.send(namespace, routing_key, subject, priority)
        self.metrics.sent.labels(namespace, routing_key).inc()
        return True

    async def fetch(
        self, caller: Caller, listener: UUID, wait: float | None = None
    ) -> PendingEvent | None:
        """The next eligible event; only the listener's owner gets one (as OS2mo).

        With `wait` (seconds, capped by the settings), a fetch that finds nothing
        waits until an event becomes eligible (a send, unsilence or rerun, or a
        back-off ending) and returns it, or returns `None` at the deadline, or
        when the broker shuts down.
        """
        if wait is not None and wait < 0:
            raise errors.InvalidInput("wait must not be negative")
        if wait is None:
            # Unchanged clients (FastRAMQPI sleeps 5 s after an empty fetch) get events
            # as they come when the operator sets a default.
            wait = self.settings.fetch_default_wait_seconds or None
        with self.metrics.timed("fetch"):
            event = await self._fetch(caller, listener, wait)
        if event is not None and event.deliveries > 1:
            self.metrics.redeliveries.inc()
        return event

    async def _fetch(
        self, caller: Caller, listener: UUID, wait: float | None
    ) -> PendingEvent | None:
        deadline = time.monotonic() + min(wait or 0.0, self.settings.fetch_max_wait_seconds)
        owner = "" if caller.owner is None else str(caller.owner)
        first = True
        while True:
            # Only the first look may be answered from memory: a long poll's later looks
            # follow a wake-up or a timed re-check (in case a wake-up was lost).
            empty_until_ms = self.empty.empty_until(listener, owner) if first else None
            first = False
            if empty_until_ms is not None:
                found = Fetched(None, next_due_ms=empty_until_ms)
            else:
                mark = self.empty.start()
                found = await self.store.fetch(
                    listener, caller.owner, self.retry_min_ms, self.retry_max_ms
                )
                if found.event is None and found.owned:
                    self.empty.remember(listener, owner, mark, found.next_due_ms)
            remaining = deadline - time.monotonic()
            if found.event is not None or not found.owned or remaining <= 0:
                return found.event
            if self.notifier.closing:
                return None
            if found.next_due_ms is not None:
                # Redis' clock decides when a back-off ends; a few ms late is fine.
                due_in = found.next_due_ms / 1000 - time.time() + 0.005
                remaining = min(remaining, max(due_in, 0.005))
            await self.notifier.wait(listener, min(remaining, LONG_POLL_RECHECK_SECONDS))

    async def acknowledge(self, caller: Caller, token: EventToken) -> bool:
        """Always true: stale, foreign and unknown tokens are no-ops (contract point 7)."""
        with self.metrics.timed("acknowledge"):
            deleted = await self.store.acknowledge(
                token.listener, caller.owner, token.subject, token.generation
            )
        if deleted:
            labels = self._labels.get(token.listener)
            if labels is None:
                found = await self.store.get_listener(token.listener)
                if found is not None:
                    labels = self._labels[token.listener] = listener_labels(found)
            if labels is not None:
                self.metrics.acknowledged.labels(*labels).inc()
        return True

    async def silence(
        self, caller: Caller, listeners: ListenerFilter, subjects: Sequence[str]
    ) -> bool:
        await self._update(caller, "silence", listeners, EventSelection(), sorted(set(subjects)))
        return True

    async def unsilence(
        self,
        caller: Caller,
        listeners: ListenerFilter | None,
        subjects: Sequence[str] | None,
        priorities: Sequence[int] | None,
    ) -> bool:
        selection = EventSelection(priorities=None if priorities is None else frozenset(priorities))
        await self._update(caller, "unsilence", listeners, selection, subjects)
        return True

    async def rerun(
        self,
        caller: Caller,
        listeners: ListenerFilter | None,
        subjects: Sequence[str] | None,
        priorities: Sequence[int] | None,
        silenced: bool | None,
    ) -> list[PendingEvent]:
        selection = EventSelection(
            priorities=None if priorities is None else frozenset(priorities), silenced=silenced
        )
        return await self._update(caller, "rerun", listeners, selection, subjects)

    async def _update(
        self,
        caller: Caller,
        action: UpdateAction,
        listeners: ListenerFilter | None,
        selection: EventSelection,
        subjects: Sequence[str] | None,
    ) -> list[PendingEvent]:
        """Apply `action` to matching events of the caller's (or, for admins, any) listeners.

        Unsilence and rerun make events fetchable: each batch is published (waking long
        polls) as soon as it is stored, so a later failure leaves no change unannounced.
        """
        touched: list[PendingEvent] = []

        async def update(listener: UUID, batch: Sequence[str]) -> None:
            found = await self.store.update(listener, action, selection, batch)
            if found and action != "silence":
                await self.notifier.publish([listener])
            touched.extend(found)

        owner = None if caller.admin else caller.owner
        async for listener in self._matching_listeners(listeners, owner=owner):
            if not self._may_manage(caller, listener):
                continue
            if subjects is not None:
                await update(listener.uuid, subjects)
                continue
            after = None
            while keys := await self.store.order_keys(listener.uuid, after, SCAN_BATCH):
                await update(listener.uuid, [records.subject_of(key) for key in keys])
                after = keys[-1]
        return touched

    async def events(
        self,
        caller: Caller,
        listeners: ListenerFilter | None,
        selection: EventSelection,
        limit: int | None,
        cursor: str | None,
    ) -> Page[PendingEvent]:
        """Pending events ordered by listener uuid, then age and subject; keyset-paginated.

        Without `limit`, a page holds `MAX_PAGE_SIZE` events (and a `next_cursor` if more).
        """
        limit = page_size(limit, MAX_PAGE_SIZE)
        after_listener, after_key = "", None
        if cursor is not None:
            key = cursors.decode(cursor)
            if len(key) != 2:
                raise errors.InvalidCursor()
            after_listener, after_key = key[0], cursor_order_key(key[1])
        owner = None if caller.read_all else caller.owner
        visible = self._matching_listeners(
            listeners, owner=owner, after=after_listener or None, inclusive=True, limit=limit
        )
        want = None if limit is None else limit + 1
        found: list[PendingEvent] = []
        async for listener in visible:
            if not self._may_see_events(caller, listener):
                continue
            after = after_key if str(listener.uuid) == after_listener else None
            remaining = None if want is None else want - len(found)
            found += await self.store.pending(listener.uuid, selection, after, remaining)
            if want is not None and len(found) >= want:
                break
        if limit is None or len(found) <= limit:
            return Page(found, None)
        last = found[limit - 1]
        last_key = records.order_key(last.created_ms, last.subject)
        return Page(found[:limit], cursors.encode([str(last.listener), last_key]))

    async def listener_events(
        self,
        caller: Caller,
        listener: Listener,
        selection: EventSelection,
        limit: int | None,
        cursor: str | None,
    ) -> list[PendingEvent]:
        if not self._may_see_events(caller, listener):
            return []
        after = None
        if cursor is not None:
            key = cursors.decode(cursor)
            after = cursor_order_key(key[-1]) if key else None
        # A nested list has no cursor to return: without `limit` it stops at MAX_PAGE_SIZE.
        limit = page_size(limit, MAX_PAGE_SIZE)
        return await self.store.pending(listener.uuid, selection, after, limit)

    async def pending_counts(self, listeners: Sequence[Listener]) -> list[int]:
        return list(
            await asyncio.gather(*(self.store.count_pending(item.uuid) for item in listeners))
        )
