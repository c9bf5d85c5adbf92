"""Domain operations on namespaces and listeners: declaring, deleting and listing them.

The ownership rules live here: who may claim a namespace, declare into it, delete a listener,
see a listener's events. `broker.operations.Broker` adds the event operations on top.
"""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar
from uuid import UUID, uuid4

from broker import cursors, errors, inputs
from broker.inputs import MAX_NAME_LENGTH
from broker.models import (
    MO_NAMESPACE,
    Caller,
    Listener,
    ListenerFilter,
    Namespace,
    NamespaceFilter,
    Page,
)
from broker.settings import Settings
from broker.storage.store import NamespaceGone, QuotaReached, Store

Item = TypeVar("Item")

# Largest `limit`; also the page size of listings of events when `limit` is missing.
MAX_PAGE_SIZE = 1000
# Values in one list of a filter or input (a subject list goes into one Lua call).
MAX_LIST_LENGTH = 1000
# Owns the built-in namespace; no token can carry it as its owner claim by accident.
SYSTEM_OWNER = UUID("00000000-0000-0000-0000-000000000000")
SCAN_BATCH = 500
# A declare or namespace delete that lost a race to a concurrent change starts over,
# this many times at most (each retry needs another request's change in between).
RACE_RETRIES = 5

log = logging.getLogger(__name__)


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


def page_size(limit: int | None, default: int | None) -> int | None:
    """`limit`, checked; `default` when it is missing."""
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise errors.InvalidInput(f"limit must be 1 to {MAX_PAGE_SIZE}")
    return limit


def single_key(cursor: str) -> str:
    """The one sort key a listing's cursor holds."""
    key = cursors.decode(cursor)
    if len(key) != 1:
        raise errors.InvalidCursor()
    return key[0]


def batch_size(limit: int | None) -> int:
    """Index members read per round trip: a page and one more, within sane bounds."""
    return SCAN_BATCH if limit is None else min(max(limit + 1, 16), SCAN_BATCH)


def _namespace_key(namespace: Namespace) -> list[str]:
    return [namespace.name]


def _listener_key(listener: Listener) -> list[str]:
    return [str(listener.uuid)]


async def _page(
    matching: AsyncIterator[Item],
    limit: int | None,
    most: int | None,
    key: Callable[[Item], list[str]],
) -> Page[Item]:
    """A page of `limit` items and the cursor after it; without `limit`, every item, or
    the first `most` + 1 when there are more than `most` (a caller refuses such a list)."""
    found: list[Item] = []
    async for item in matching:
        found.append(item)
        if limit is not None and len(found) > limit:
            return Page(found[:limit], cursors.encode(key(found[limit - 1])))
        if limit is None and most is not None and len(found) > most:
            break
    return Page(found, None)


class Registry:
    """Namespaces and listeners, with the ownership rules of the contract."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

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
        self,
        caller: Caller,
        selection: NamespaceFilter,
        limit: int | None,
        cursor: str | None,
        most: int | None = None,
    ) -> Page[Namespace]:
        limit = page_size(limit, None)
        after = None if cursor is None else single_key(cursor)
        matching = self._matching_namespaces(selection, after, limit)
        return await _page(matching, limit, most, _namespace_key)

    async def _matching_namespaces(
        self, selection: NamespaceFilter, after: str | None, limit: int | None
    ) -> AsyncIterator[Namespace]:
        """Matching namespaces in name order after `after`, read from the narrowest index."""
        batch = batch_size(limit)
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
        self,
        caller: Caller,
        selection: ListenerFilter,
        limit: int | None,
        cursor: str | None,
        most: int | None = None,
    ) -> Page[Listener]:
        limit = page_size(limit, None)
        after = None if cursor is None else single_key(cursor)
        matching = self._matching_listeners(selection, after=after, limit=limit)
        return await _page(matching, limit, most, _listener_key)

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
        batch = batch_size(limit)
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
