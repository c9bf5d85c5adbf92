"""The context every resolver gets: the caller, and what one request may still spend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from graphql import GraphQLResolveInfo, OperationType

from broker import auth, errors
from broker.http.preflight import item_fields
from broker.http.slots import CallerSlots
from broker.models import Caller, Listener, Namespace
from broker.operations import Broker
from broker.settings import Settings

# Objects (listeners, namespaces, events) one request may list in all, over its nested
# lists and aliases, by default (BROKER_MAX_OBJECTS_PER_REQUEST): `event_listeners
# { events }` multiplies the page size by the listeners, and 30 aliases of a listing
# without `limit` made a 40 MB answer. A list without `limit` reads at most one more
# than what is left.
OBJECTS_PER_REQUEST = 10_000
# How many nested per-object fields that read Redis (`Listener.events`,
# `Namespace.listeners`, an uncached `Listener.namespace` or `FullEvent.listener`) run at
# once for one caller, over all of its requests (`CallerSlots`), and how many one request
# may resolve (BROKER_MAX_NESTED_PER_REQUEST): queries over thousands of listeners, sent
# by one caller from many clients at once, must not take the connection pool or the
# event loop from every other caller.
NESTED_CONCURRENCY = 8
# A list of more objects than LARGE_ANSWER is a large answer: completing it takes
# milliseconds of the event loop (in slices: broker/http/slices.py). One caller has at
# most LARGE_CONCURRENCY of them in progress at once, over all of its requests, so that
# its clients sending large listings in parallel take no more of the loop than one does
# (benchmarks/noisy_owner.py: another caller's fetch + acknowledge 10-18 ms without the
# cap, 5.5-9 ms with it, against four clients listing 1,000 listeners).
LARGE_ANSWER = 100
LARGE_CONCURRENCY = 1
# The nested fields that read Redis once for every object of a list (`Listener.namespace`
# and `FullEvent.listener` read once per distinct key: see `Context.listener`).
PER_ITEM = frozenset({"Listener.events", "Namespace.listeners"})

Key = TypeVar("Key")
Found = TypeVar("Found")


def _made(info: GraphQLResolveInfo[Any], root: str) -> str:
    """For a mutation's answer, that its change is made all the same.

    A mutation checks what it can before it writes (broker/http/preflight.py); how many
    objects its answer holds is known only after, when the change is done.
    """
    if info.operation.operation is OperationType.MUTATION:
        return f"`{root}` made its change, but its answer is too large: "
    return ""


def _root_field(info: GraphQLResolveInfo[Any]) -> str:
    """The root field (its response key) a nested resolver runs under."""
    path = info.path
    while path.prev is not None:
        path = path.prev
    return str(path.key)


@dataclass(frozen=True)
class Shares:
    """What a caller may have in progress at once over all of its requests (`CallerSlots`);
    one for the app, shared by both GraphQL routes."""

    nested: CallerSlots = field(default_factory=lambda: CallerSlots(NESTED_CONCURRENCY))
    large: CallerSlots = field(default_factory=lambda: CallerSlots(LARGE_CONCURRENCY))


@dataclass
class Context:
    """What every resolver gets as `info.context`, built once per request."""

    broker: Broker
    caller: Caller
    # The caller's realm roles, checked against FIELD_ROLES. None by default: fail closed.
    roles: frozenset[str] = frozenset()
    # Listeners and namespaces read for nested fields, once per request each.
    listeners: dict[UUID, asyncio.Future[Listener | None]] = field(default_factory=dict)
    namespaces: dict[str, asyncio.Future[Namespace | None]] = field(default_factory=dict)
    nested_limit: int = 200
    nested_spent: int = 0
    shares: Shares = field(default_factory=Shares)
    # Why the request is refused, once a budget ran out: everything after fails fast.
    refused: errors.InvalidInput | None = None
    objects_limit: int = OBJECTS_PER_REQUEST
    listed: int = 0  # objects listed so far, of `objects_limit`
    made: list[str] = field(default_factory=list)  # a mutation's root fields done so far
    # The caller's large-answer share, once this request took it (`admit`).
    _large: AsyncExitStack | None = None
    _taking: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Answered: what graphql-core left running after an error takes nothing more.
    _over: bool = False

    @asynccontextmanager
    async def nested(self, info: GraphQLResolveInfo[Any]) -> AsyncIterator[None]:
        """Guard one nested field's Redis work: counted, and a few at a time."""
        self.nested_spent += 1
        if self.nested_spent > self.nested_limit and self.refused is None:
            self._refuse(info, f"{info.parent_type.name}.{info.field_name}")
        self._raise_if_refused()
        async with self.shares.nested.hold(self.caller.owner):
            # Refused while this one waited: the answer is an error anyway.
            self._raise_if_refused()
            yield

    def room(self) -> int:
        """How many objects a list without `limit` may still read (it reads one more, to
        know when there are too many)."""
        return max(self.objects_limit - self.listed, 0)

    async def admit(
        self, items: int, info: GraphQLResolveInfo[Any] | None = None, root: str = ""
    ) -> None:
        """Before a list of `items` objects is completed: count them against the
        request's budget, and if that is a large answer, wait for the caller's share of
        large answers. The request holds it until `release()`.

        Called by the resolvers of lists once they know their length (the Redis reads
        before it are bounded by the page, `room()` and the nested slots), never while
        holding a nested slot, so that no two requests wait on each other. Root fields,
        which get no resolve info, name themselves (`root`).
        """
        self._raise_if_refused()
        self.listed += items
        if self.listed > self.objects_limit and self.refused is None:
            made = ""
            if info is not None:
                root = _root_field(info)
                made = _made(info, root)
            self.refused = errors.InvalidInput(
                made + f"The query lists more than {self.objects_limit} objects in one "
                f"request; give `{root}` a `limit` and page with `cursor`"
            )
        self._raise_if_refused()
        if items <= LARGE_ANSWER or self._large is not None:
            return
        async with self._taking:  # the request's other lists wait for the same share
            if self._large is None:
                large = AsyncExitStack()
                await large.enter_async_context(self.shares.large.hold(self.caller.owner))
                self._large = large
                if self._over:  # taken after the answer went out: give it back at once
                    await self.release()
        self._raise_if_refused()

    async def release(self) -> None:
        """The request is answered: give back what it held, and take nothing more."""
        self._over = True
        large, self._large = self._large, None
        if large is not None:
            await large.aclose()

    def expect(self, info: GraphQLResolveInfo[Any], items: int) -> None:
        """Refuse a list of `items` now if their nested fields would go past the budget.

        Called by the resolvers of lists of listeners and namespaces, before any item's
        nested field runs: refusing only when the budget runs out, item by item, left
        graphql-core to complete (and fail) every remaining item, which cost the event
        loop more than the answer would have.
        """
        fields = item_fields(info, PER_ITEM)
        if fields and self.nested_spent + len(fields) * items > self.nested_limit:
            self._refuse(info, fields[0])
            self._raise_if_refused()

    def _refuse(self, info: GraphQLResolveInfo[Any], field_name: str) -> None:
        root = _root_field(info)
        self.refused = errors.InvalidInput(
            _made(info, root) + f"`{root}` selects `{field_name}` for more "
            f"than {self.nested_limit} objects in one request; narrow `{root}` with "
            "its `filter` (e.g. `uuids`, `owners`, `namespaces`) and a `limit`, and "
            "page with `cursor`, or list events with the root field `events` instead"
        )

    def _raise_if_refused(self) -> None:
        if self.refused is not None:
            # A new exception each time: one raised again and again collects a traceback.
            raise errors.InvalidInput(str(self.refused))
        if self._over:
            raise errors.InvalidInput("The request is answered already")

    def listener(
        self, uuid: UUID, info: GraphQLResolveInfo[Any]
    ) -> Listener | asyncio.Future[Listener | None] | None:
        """The listener, once read in this request; until then its read, to await.

        Concurrent look-ups of one key share one read, and the objects of a list that
        come after it is back get the value itself: no awaitable for each of them.
        """
        if uuid not in self.listeners:
            self.listeners[uuid] = self._read(self.broker.listener, uuid, info)
        return _known(self.listeners[uuid])

    def namespace(
        self, name: str, info: GraphQLResolveInfo[Any]
    ) -> Namespace | asyncio.Future[Namespace | None] | None:
        """The namespace, as `listener` gives a listener."""
        if name not in self.namespaces:
            self.namespaces[name] = self._read(self.broker.namespace, name, info)
        return _known(self.namespaces[name])

    def _read(
        self, read: Callable[[Key], Awaitable[Found]], key: Key, info: GraphQLResolveInfo[Any]
    ) -> asyncio.Future[Found]:
        """One nested read, as a task that every look-up of `key` awaits."""

        async def guarded() -> Found:
            async with self.nested(info):
                return await read(key)

        task = asyncio.ensure_future(guarded())
        # Its error reaches every waiter; when graphql-core stopped waiting (another
        # field failed first), it is retrieved here rather than logged at collection.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return task


def _known(read: asyncio.Future[Found]) -> Found | asyncio.Future[Found]:
    return read.result() if read.done() else read


def context_for(
    broker: Broker, settings: Settings, shares: Shares, principal: auth.Principal
) -> Context:
    """The context of one request by `principal`; `shares` are the app's, for every request."""
    return Context(
        broker=broker,
        caller=auth.caller_of(principal, settings),
        roles=principal.roles,
        nested_limit=settings.max_nested_per_request,
        objects_limit=settings.max_objects_per_request,
        shares=shares,
    )
