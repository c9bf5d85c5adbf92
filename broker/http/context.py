"""The context every resolver gets: the caller, and what one request may still spend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from graphql import GraphQLResolveInfo, OperationType

from broker import auth, errors
from broker.http.preflight import item_fields
from broker.http.slots import CallerSlots
from broker.models import Caller, Listener, Namespace, PendingEvent
from broker.operations import Broker
from broker.settings import Settings

# Events one request may list in all: a budget across nested lists and aliases, since
# `event_listeners { events }` would otherwise multiply the page size by the listeners.
EVENTS_PER_REQUEST = 10_000
# How many nested per-object fields that read Redis (`Listener.events`,
# `Namespace.listeners`, an uncached `Listener.namespace` or `FullEvent.listener`) run at
# once for one caller, over all of its requests (`CallerSlots`), and how many one request
# may resolve (BROKER_MAX_NESTED_PER_REQUEST): queries over thousands of listeners, sent
# by one caller from many clients at once, must not take the connection pool or the
# event loop from every other caller.
NESTED_CONCURRENCY = 8
# The nested fields that read Redis once for every object of a list (`Listener.namespace`
# and `FullEvent.listener` read once per distinct key: see `Context.listener`).
PER_ITEM = frozenset({"Listener.events", "Namespace.listeners"})


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


@dataclass
class Context:
    """What every resolver gets as `info.context`, built once per request."""

    broker: Broker
    caller: Caller
    # The caller's realm roles, checked against FIELD_ROLES. None by default: fail closed.
    roles: frozenset[str] = frozenset()
    listeners: dict[UUID, Listener | None] = field(default_factory=dict)
    namespaces: dict[str, Namespace | None] = field(default_factory=dict)
    # Events one request may list in all, nested lists and aliases included.
    event_budget: int = field(default_factory=lambda: EVENTS_PER_REQUEST)
    nested_limit: int = 200
    nested_spent: int = 0
    nested_slots: CallerSlots = field(default_factory=lambda: CallerSlots(NESTED_CONCURRENCY))
    nested_refused: errors.InvalidInput | None = None

    @asynccontextmanager
    async def nested(self, info: GraphQLResolveInfo[Any]) -> AsyncIterator[None]:
        """Guard one nested field's Redis work: counted, and a few at a time."""
        self.nested_spent += 1
        if self.nested_spent > self.nested_limit and self.nested_refused is None:
            self._refuse(info, f"{info.parent_type.name}.{info.field_name}")
        self._raise_if_refused()
        async with self.nested_slots.hold(self.caller.owner):
            # Refused while this one waited: the answer is an error anyway.
            self._raise_if_refused()
            yield

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
        self.nested_refused = errors.InvalidInput(
            _made(info, root) + f"`{root}` selects `{field_name}` for more "
            f"than {self.nested_limit} objects in one request; narrow `{root}` with "
            "its `filter` (e.g. `uuids`, `owners`, `namespaces`) and a `limit`, and "
            "page with `cursor`, or list events with the root field `events` instead"
        )

    def _raise_if_refused(self) -> None:
        if self.nested_refused is not None:
            # A new exception each time: one raised again and again collects a traceback.
            raise errors.InvalidInput(str(self.nested_refused))

    def spend(
        self, events: list[PendingEvent], info: GraphQLResolveInfo[Any] | None = None
    ) -> list[PendingEvent]:
        """Count listed events against the request's budget (`info`: a nested field's)."""
        self.event_budget -= len(events)
        if self.event_budget < 0:
            raise errors.InvalidInput(
                ("" if info is None else _made(info, _root_field(info)))
                + f"The query lists more than {EVENTS_PER_REQUEST} events; "
                "page with `limit` and `cursor` instead"
            )
        return events

    async def listener(self, uuid: UUID, info: GraphQLResolveInfo[Any]) -> Listener | None:
        if uuid not in self.listeners:
            async with self.nested(info):
                self.listeners[uuid] = await self.broker.listener(uuid)
        return self.listeners[uuid]

    async def namespace(self, name: str, info: GraphQLResolveInfo[Any]) -> Namespace | None:
        if name not in self.namespaces:
            async with self.nested(info):
                self.namespaces[name] = await self.broker.namespace(name)
        return self.namespaces[name]


def context_for(
    broker: Broker, settings: Settings, slots: CallerSlots, principal: auth.Principal
) -> Context:
    """The context of one request by `principal`; `slots` are the app's, for every request."""
    return Context(
        broker=broker,
        caller=auth.caller_of(principal, settings),
        roles=principal.roles,
        nested_limit=settings.max_nested_per_request,
        nested_slots=slots,
    )
