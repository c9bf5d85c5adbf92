"""The context every resolver gets: the caller, and what one request may still spend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from graphql import GraphQLResolveInfo

from broker import auth, errors
from broker.models import Caller, Listener, Namespace, PendingEvent
from broker.operations import Broker
from broker.settings import Settings

# Events one request may list in all: a budget across nested lists and aliases, since
# `event_listeners { events }` would otherwise multiply the page size by the listeners.
EVENTS_PER_REQUEST = 10_000
# How many nested per-object fields that read Redis (`Listener.events`,
# `Namespace.listeners`, an uncached `Listener.namespace` or `FullEvent.listener`) run at
# once in one request, and how many one request may resolve (BROKER_MAX_NESTED_PER_REQUEST):
# one query over thousands of listeners must not take the connection pool from every
# other caller. The default budget fits the default listener quota.
NESTED_CONCURRENCY = 8
NESTED_PER_REQUEST = 1000


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
    nested_limit: int = NESTED_PER_REQUEST
    nested_spent: int = 0
    nested_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(NESTED_CONCURRENCY)
    )
    nested_refused: errors.InvalidInput | None = None

    @asynccontextmanager
    async def nested(self, info: GraphQLResolveInfo[Any]) -> AsyncIterator[None]:
        """Guard one nested field's Redis work: counted, and a few at a time."""
        self.nested_spent += 1
        if self.nested_spent > self.nested_limit and self.nested_refused is None:
            root = _root_field(info)
            self.nested_refused = errors.InvalidInput(
                f"`{root}` selects `{info.parent_type.name}.{info.field_name}` for more "
                f"than {self.nested_limit} objects in one request; narrow `{root}` with "
                "its `filter` (e.g. `uuids`, `owners`, `namespaces`) and a `limit`, and "
                "page with `cursor`, or list events with the root field `events` instead"
            )
        if self.nested_refused is not None:
            raise self.nested_refused
        async with self.nested_slots:
            # Refused while this one waited: the answer is an error anyway.
            if self.nested_refused is not None:
                raise self.nested_refused
            yield

    def spend(self, events: list[PendingEvent]) -> list[PendingEvent]:
        self.event_budget -= len(events)
        if self.event_budget < 0:
            raise errors.InvalidInput(
                f"The query lists more than {EVENTS_PER_REQUEST} events; "
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


def context_for(broker: Broker, settings: Settings, principal: auth.Principal) -> Context:
    """The context of one request by `principal`."""
    return Context(
        broker=broker,
        caller=auth.caller_of(principal, settings),
        roles=principal.roles,
        nested_limit=settings.max_nested_per_request,
    )
