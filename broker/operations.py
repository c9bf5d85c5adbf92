"""Domain operations of the event system: the rules of the contract, over the store.

Every operation takes the `Caller` first, so authentication decides who that is
and these functions decide what that caller may do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from uuid import UUID, uuid4

from broker import cursors, errors, inputs
from broker.inputs import MAX_NAME_LENGTH
from broker.metrics import Metrics, listener_labels
from broker.models import (
    MO_NAMESPACE,
    Caller,
    EventSelection,
    Listener,
    ListenerFilter,
    Namespace,
    NamespaceFilter,
    Page,
    PendingEvent,
)
from broker.notify import Notifier
from broker.settings import Settings
from broker.storage import gauges
from broker.storage.gauges import IngestLag, ListenerStats
from broker.storage.store import (
    Fetched,
    ListenerRates,
    NamespaceGone,
    QuotaReached,
    Store,
    UpdateAction,
)
from broker.tokens import EventToken

MAX_SUBJECT_LENGTH = 220
# Largest `limit`; also the page size of listings of events when `limit` is missing.
MAX_PAGE_SIZE = 1000
# Values in one list of a filter or input (a subject list goes into one Lua call).
MAX_LIST_LENGTH = 1000
# Owns the built-in namespace; no token can carry it as its owner claim by accident.
SYSTEM_OWNER = UUID("00000000-0000-0000-0000-000000000000")
_SCAN_BATCH = 500
# A declare or namespace delete that lost a race to a concurrent change starts over,
# this many times at most (each retry needs another request's change in between).
RACE_RETRIES = 5
# A long poll re-checks at least this often, in case a notification was lost.
LONG_POLL_RECHECK_SECONDS = 5.0

# The console's "recent" send and acknowledge rates: this many whole minutes back.
RATE_WINDOW_MINUTES = 5

log = logging.getLogger(__name__)


__all__ = ["MAX_NAME_LENGTH", "Broker", "canonical_namespace", "check_list", "spellings"]


@dataclass(frozen=True, slots=True)
class ListenerSummary:
    """A listener with its backlog; `stats` is `None` where the caller may not see its events."""

    listener: Listener
    stats: ListenerStats | None


@dataclass(frozen=True, slots=True)
class WaitingEvent:
    """A pending event and when its back-off ends (`None`: fetchable now)."""

    event: PendingEvent
    retry_at_ms: int | None


def canonical_namespace(name: str) -> str:
    """`MO` (the seed's spelling) names the built-in `mo` namespace."""
    return MO_NAMESPACE if name == "MO" else name


def spellings(name: str) -> list[str]:
    """How a name asked for may be stored: in NFC, or (from before names were) as given."""
    return list(dict.fromkeys([unicodedata.normalize("NFC", name), name]))


def check_list(what: str, values: Sequence[object], max_length: int | None = None) -> None:
    """Refuse an input list longer than `MAX_LIST_LENGTH`, or holding an overlong string."""
    if len(values) > MAX_LIST_LENGTH:
        raise errors.InvalidInput(f"{what} may hold at most {MAX_LIST_LENGTH} values")
    if max_length is not None and any(
        isinstance(value, str) and len(value) > max_length for value in values
    ):
        raise errors.InvalidInput(f"each of {what} must be at most {max_length} characters")


def _page_size(limit: int | None, default: int | None) -> int | None:
    """`limit`, checked; `default` when it is missing."""
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise errors.InvalidInput(f"limit must be 1 to {MAX_PAGE_SIZE}")
    return limit


def _single_key(cursor: str) -> str:
    """The one sort key a listing's cursor holds."""
    key = cursors.decode(cursor)
    if len(key) != 1:
        raise errors.InvalidCursor()
    return key[0]


def _batch_size(limit: int | None) -> int:
    """Index members read per round trip: a page and one more, within sane bounds."""
    return _SCAN_BATCH if limit is None else min(max(limit + 1, 16), _SCAN_BATCH)


def _namespace_key(namespace: Namespace) -> list[str]:
    return [namespace.name]


def _listener_key(listener: Listener) -> list[str]:
    return [str(listener.uuid)]


class Broker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.empty = notifier.empty  # listeners known to have nothing to fetch
        self.metrics = metrics or Metrics()
        # Metric labels of listeners (fixed for a uuid's lifetime), looked up on first ack.
        self._labels: dict[UUID, tuple[str, str, str, str]] = {}
        self.retry_min_ms = int(settings.retry_min_seconds * 1000)
        self.retry_max_ms = int(settings.retry_max_seconds * 1000)

    async def setup(self) -> None:
        """Prepare storage and make sure the built-in public `mo` namespace exists."""
        await self.store.setup()
        await self.store.fold_namespaces(inputs.fold)
        await self.store.claim_namespace(
            Namespace(MO_NAMESPACE, SYSTEM_OWNER, public=True), inputs.fold(MO_NAMESPACE)
        )

    # Namespaces -----------------------------------------------------------------------------

    async def declare_namespace(self, caller: Caller, name: str, public: bool) -> Namespace:
        name = canonical_namespace(inputs.name("name", name))
        try:
            claim = await self.store.claim_namespace(
                Namespace(name, caller.owner, public),
                inputs.fold(name),
                self.settings.max_namespaces_per_owner,
            )
        except QuotaReached:
            raise errors.NamespaceQuota(self.settings.max_namespaces_per_owner) from None
        if claim.lookalike is not None:
            raise errors.NamespaceLookalike(claim.lookalike)
        held = claim.held
        if held is None:
            raise errors.RecordUnreadable("namespace")
        if held.owner != caller.owner:
            raise errors.NamespaceClaimed()
        if held.public != public:
            raise errors.NamespacePublicMismatch(held.public)
        return held

    async def delete_namespace(self, caller: Caller, name: str) -> bool:
        """Delete by name; also one stored before the name rules, or whose record is unreadable."""
        if not name or len(name) > MAX_NAME_LENGTH:
            raise errors.InvalidInput(f"name must be 1 to {MAX_NAME_LENGTH} characters")
        for spelling in spellings(canonical_namespace(name)):
            if await self.store.namespace_recorded(spelling):
                name = spelling
                break
        else:
            return True
        if name == MO_NAMESPACE:
            raise errors.NamespaceBuiltIn()
        for _ in range(RACE_RETRIES):
            namespace = await self.store.get_namespace(name)
            if namespace is None and not await self.store.namespace_recorded(name):
                return True
            owner = None if namespace is None else namespace.owner
            if owner != caller.owner and not caller.admin:
                raise errors.NotNamespaceOwner()
            # The listener check and the delete are one script (lua/delete_namespace.lua).
            deleted = await self.store.delete_namespace(name, namespace, inputs.fold(name))
            if deleted == 0:
                raise errors.NamespaceHasListeners()
            if deleted == 1:
                return True
            # -1: deleted and claimed again since we read it; decide on the new record.
        raise errors.StorageUnavailable()

    async def namespaces(
        self, caller: Caller, selection: NamespaceFilter, limit: int | None, cursor: str | None
    ) -> Page[Namespace]:
        limit = _page_size(limit, None)
        after = None if cursor is None else _single_key(cursor)
        found: list[Namespace] = []
        async for namespace in self._matching_namespaces(selection, after, limit):
            found.append(namespace)
            if limit is not None and len(found) > limit:
                return Page(found[:limit], cursors.encode(_namespace_key(found[limit - 1])))
        return Page(found, None)

    async def _matching_namespaces(
        self, selection: NamespaceFilter, after: str | None, limit: int | None
    ) -> AsyncIterator[Namespace]:
        """Matching namespaces in name order after `after`, read from the narrowest index."""
        batch = _batch_size(limit)
        if selection.names is not None:
            names = sorted(name for name in selection.names if after is None or name > after)
            for start in range(0, len(names), batch):
                chunk = names[start : start + batch]
                found = await self.store.get_namespaces(chunk)
                for name in chunk:
                    if name in found and selection.matches(found[name]):
                        yield found[name]
            return
        keys = self.store.keys
        if selection.owners is not None:
            indexes = [keys.owner_namespaces(str(owner)) for owner in sorted(selection.owners)]
        else:
            indexes = [keys.namespace_order]
        while names := await self.store.index_page(indexes, after, batch):
            found = await self.store.get_namespaces(names)
            for name in names:
                if name in found and selection.matches(found[name]):
                    yield found[name]
            if len(names) < batch:
                return
            after = names[-1]

    async def namespace(self, name: str) -> Namespace | None:
        return await self.store.get_namespace(name)

    # Listeners ------------------------------------------------------------------------------

    async def declare_listener(
        self, caller: Caller, namespace: str, user_key: str, routing_key: str
    ) -> Listener:
        """Claim the identity, then create the listener's state and subscribe it.

        The three steps live in three hash slots (registry, listener, ingest shard), so
        they cannot be one script. The claim (with its indexes and the owner's quota) is
        one atomic script; if a later step fails, the steps done are undone, so an
        error leaves Redis as it was. Should the undo fail too (Redis gone mid-request),
        what is left is a registered listener that the next declare of the same
        identity completes. A declare that finds the identity deleted after it
        (re)created the state undoes its state and starts over, so a delete racing a
        re-declare leaves no orphaned state.
        """
        namespace = canonical_namespace(inputs.name("namespace", namespace))
        user_key = inputs.name("user_key", user_key)
        routing_key = inputs.name("routing_key", routing_key)
        for _ in range(RACE_RETRIES):
            found = await self.store.get_namespace(namespace)
            if found is None:
                raise errors.ListenerNamespaceNotFound()
            if not found.public and found.owner != caller.owner:
                raise errors.NamespaceNotPublic()
            wanted = Listener(uuid4(), caller.owner, namespace, routing_key, user_key)
            try:
                listener, created = await self.store.claim_listener(
                    wanted, self.settings.max_listeners_per_owner
                )
            except NamespaceGone:
                raise errors.ListenerNamespaceNotFound() from None
            except QuotaReached:
                raise errors.ListenerQuota(self.settings.max_listeners_per_owner) from None
            if listener is None:
                raise errors.RecordUnreadable("listener")
            if listener.routing_key != routing_key:
                raise errors.ListenerRoutingKeyMismatch()
            try:
                # Both steps are idempotent, so a re-declare also repairs an interrupted one.
                await self.store.create_listener_state(listener)
                await self.store.subscribe(listener)
                if await self.store.holds_identity(listener):
                    return listener
            except BaseException:
                await self._undo_declare(listener, created)
                raise
            # Deleted meanwhile: its delete may have run before our state was written.
            await self._undo_declare(listener, created=False)
        raise errors.StorageUnavailable()

    async def _undo_declare(self, listener: Listener, created: bool) -> None:
        """Take back what a declare wrote: its state and subscription, and a new claim.

        A re-declare of an existing listener keeps it registered: its state and
        subscription are only removed when the registry no longer holds it.
        """
        with contextlib.suppress(Exception):
            if not created and await self.store.holds_identity(listener):
                return
            await self.store.delete_listener_state(listener.uuid, None, True)
            await self.store.unsubscribe(listener)
            if created:
                await self.store.release_listener(listener)

    async def delete_listener(
        self, caller: Caller, uuid: UUID, delete_pending_events: bool
    ) -> bool:
        """Release the registry record first, then the state, then the subscription.

        Registry first: a re-declare racing the delete then either finds the identity
        gone (and declares a new listener) or sees it gone after writing the state and
        undoes that (see `declare_listener`). If the state step fails, the registry
        record is claimed back, so an error leaves the listener as it was.
        """
        listener = await self.store.get_listener(uuid)
        if listener is None:
            return await self._delete_unreadable_listener(caller, uuid, delete_pending_events)
        if listener.owner != caller.owner and not caller.admin:
            raise errors.PermissionDenied()
        if not delete_pending_events and await self.store.count_pending(uuid) > 0:
            raise errors.ListenerHasPendingEvents()
        if not await self.store.release_listener(listener):
            return True  # a concurrent delete was first
        try:
            # Events that arrived since the check above go with the listener.
            await self.store.delete_listener_state(uuid, None, True)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.claim_listener(listener)
            raise
        # Done: without its state the listener is gone. A topic entry left by a failure
        # here is invisible and dropped by the fan-out's next event (lua/apply.lua: -1).
        try:
            await self.store.unsubscribe(listener)
        except Exception as error:
            log.warning("listener %s deleted, its topic entry stays for now (%s)", uuid, error)
        return True

    async def _delete_unreadable_listener(
        self, caller: Caller, uuid: UUID, delete_pending_events: bool
    ) -> bool:
        """Delete a listener whose record cannot be read: admins, or the owner its state names."""
        if not await self.store.listener_recorded(uuid):
            return True  # unknown: nothing to delete
        topic = await self.store.listener_topic(uuid)
        if topic is None and not caller.admin:
            raise errors.PermissionDenied()  # no readable state to say whose it is
        deleted = await self.store.delete_listener_state(
            uuid, None if caller.admin else caller.owner, delete_pending_events
        )
        if deleted == -1:
            raise errors.PermissionDenied()
        if deleted == 0:
            raise errors.ListenerHasPendingEvents()
        if topic is not None:
            await self.store.drop_from_topic(*topic, uuid)
        await self.store.forget_unreadable_listener(uuid)
        return True

    async def listener(self, uuid: UUID) -> Listener | None:
        return await self.store.get_listener(uuid)

    async def listeners(
        self, caller: Caller, selection: ListenerFilter, limit: int | None, cursor: str | None
    ) -> Page[Listener]:
        limit = _page_size(limit, None)
        after = None if cursor is None else _single_key(cursor)
        found: list[Listener] = []
        async for listener in self._matching_listeners(selection, after=after, limit=limit):
            found.append(listener)
            if limit is not None and len(found) > limit:
                return Page(found[:limit], cursors.encode(_listener_key(found[limit - 1])))
        return Page(found, None)

    async def _matching_listeners(
        self,
        selection: ListenerFilter | None,
        *,
        owner: UUID | None = None,
        after: str | None = None,
        inclusive: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Listener]:
        """Matching listeners (of `owner` only, if given) in uuid order after `after`.

        Read from the narrowest index the filter allows (named uuids, the owners', the
        namespaces', or all), a page at a time, so a caller pays for what it is shown
        and its own things, never for the whole registry.
        """
        selection = selection or ListenerFilter()
        batch = _batch_size(limit)
        owners = selection.owners
        if owner is not None:
            owners = frozenset([owner]) if owners is None else owners & {owner}
        keys = self.store.keys
        namespaces: dict[str, Namespace] = {}

        def matches(listener: Listener) -> bool:
            return (owners is None or listener.owner in owners) and selection.matches(
                listener, namespaces
            )

        if selection.uuids is not None:
            uuids = sorted(
                str(uuid)
                for uuid in selection.uuids
                if after is None or str(uuid) > after or (inclusive and str(uuid) == after)
            )
            for start in range(0, len(uuids), batch):
                found = await self.store.get_listeners(uuids[start : start + batch])
                if selection.namespaces is not None:
                    namespaces = await self._namespaces_of(found)
                for listener in found:
                    if matches(listener):
                        yield listener
            return
        if owners is not None:
            indexes = [keys.owner_listeners(str(item)) for item in sorted(owners)]
        elif selection.namespaces is not None:
            names = [
                namespace.name
                async for namespace in self._matching_namespaces(selection.namespaces, None, None)
            ]
            indexes = [keys.namespace_listeners(name) for name in names]
        else:
            indexes = [keys.listener_order]
        while uuids := await self.store.index_page(indexes, after, batch, inclusive):
            found = await self.store.indexed_listeners(uuids)
            if selection.namespaces is not None:
                namespaces = await self._namespaces_of(found)
            for listener in found:
                if matches(listener):
                    yield listener
            if len(uuids) < batch:
                return
            after, inclusive = uuids[-1], False

    async def _namespaces_of(self, listeners: Sequence[Listener]) -> dict[str, Namespace]:
        return await self.store.get_namespaces(sorted({item.namespace for item in listeners}))

    def _may_see_events(self, caller: Caller, listener: Listener) -> bool:
        return caller.read_all or listener.owner == caller.owner

    def _may_manage(self, caller: Caller, listener: Listener) -> bool:
        return caller.admin or listener.owner == caller.owner

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
            while keys := await self.store.order_keys(listener.uuid, after, _SCAN_BATCH):
                await update(listener.uuid, [key.partition(":")[2] for key in keys])
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
        limit = _page_size(limit, MAX_PAGE_SIZE)
        after_listener, after_key = "", None
        if cursor is not None:
            key = cursors.decode(cursor)
            if len(key) != 2:
                raise errors.InvalidCursor()
            after_listener, after_key = key
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
        return Page(found[:limit], cursors.encode([str(last.listener), last.order_key]))

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
            after = key[-1] if key else None
        # A nested list has no cursor to return: without `limit` it stops at MAX_PAGE_SIZE.
        limit = _page_size(limit, MAX_PAGE_SIZE)
        return await self.store.pending(listener.uuid, selection, after, limit)

    async def pending_counts(self, listeners: Sequence[Listener]) -> list[int]:
        return list(
            await asyncio.gather(*(self.store.count_pending(item.uuid) for item in listeners))
        )

    # Operator views (the console) --------------------------------------------------------------

    async def listener_summaries(
        self, caller: Caller, listeners: Sequence[Listener]
    ) -> list[ListenerSummary]:
        """The listeners with their pending counts, for those whose events the caller may see.

        The same reads as the metrics' gauges (a few pipelined commands per 500 listeners).
        """
        visible = [item for item in listeners if self._may_see_events(caller, item)]
        stats = dict(
            zip(
                (item.uuid for item in visible),
                await gauges.listener_stats(self.store, [item.uuid for item in visible]),
                strict=True,
            )
        )
        return [ListenerSummary(item, stats.get(item.uuid)) for item in listeners]

    async def listener_rates(
        self, caller: Caller, listeners: Sequence[Listener]
    ) -> list[ListenerRates | None]:
        """Recent per-minute rates of stored and acknowledged events (`None`: not visible)."""
        visible = [item for item in listeners if self._may_see_events(caller, item)]
        now_ms = int(time.time() * 1000)
        found = await self.store.listener_rates(
            [item.uuid for item in visible], now_ms, RATE_WINDOW_MINUTES
        )
        rates = dict(zip((item.uuid for item in visible), found, strict=True))
        return [rates.get(item.uuid) for item in listeners]

    async def waiting_events(
        self,
        caller: Caller,
        listener: Listener,
        search: str | None,
        after: str | None,
        limit: int,
    ) -> list[WaitingEvent]:
        """A page of the listener's pending events in age order, or those matching `search`.

        A search looks at every pending event of the listener and answers its first
        `limit` matches (no further pages).
        """
        if not self._may_see_events(caller, listener):
            raise errors.PermissionDenied()
        limit = _page_size(limit, None) or MAX_PAGE_SIZE
        if search:
            if len(search) > MAX_SUBJECT_LENGTH:
                raise errors.SubjectTooLarge()
            events = await self.store.search_pending(listener.uuid, search, limit)
        else:
            events = await self.store.pending(listener.uuid, EventSelection(), after, limit)
        due = await self.store.retry_at(listener.uuid, [event.subject for event in events])
        return [WaitingEvent(event, at) for event, at in zip(events, due, strict=True)]

    async def change_events(
        self,
        caller: Caller,
        action: UpdateAction,
        listener: Listener,
        subjects: Sequence[str] | None,
    ) -> list[PendingEvent]:
        """Silence, unsilence or rerun some (`None`: all) of one listener's events.

        The console's form of the three mutations: the same rules, but a listener the
        caller may not manage is refused (not skipped), and the changed events come back.
        """
        if not self._may_manage(caller, listener):
            raise errors.PermissionDenied()
        if subjects is not None:
            check_list("subjects", subjects, MAX_SUBJECT_LENGTH)
            subjects = sorted(set(subjects))
        elif action == "silence":
            raise errors.InvalidInput("silence needs the subjects to silence")
        only = ListenerFilter(uuids=frozenset([listener.uuid]))
        return await self._update(caller, action, only, EventSelection(), subjects)

    async def fanout_lag(self) -> list[IngestLag]:
        """Per ingest shard: entries not yet fanned out to listeners, and the oldest's age."""
        return await gauges.ingest_lag(self.store)

    async def store_reachable(self) -> bool:
        return await self.store.ping()
