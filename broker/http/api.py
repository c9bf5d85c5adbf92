"""GraphQL resolvers: parse input, call the domain, shape the output. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Final, TypeVar
from uuid import UUID

from ariadne import MutationType, ObjectType, QueryType, ScalarType
from graphql import GraphQLResolveInfo

from broker import auth, cursors, errors
from broker.models import (
    Caller,
    EventSelection,
    Listener,
    ListenerFilter,
    Namespace,
    NamespaceFilter,
    Page,
    PendingEvent,
)
from broker.operations import (
    MAX_NAME_LENGTH,
    MAX_SUBJECT_LENGTH,
    Broker,
    canonical_namespace,
    check_list,
    spellings,
)
from broker.settings import Settings
from broker.tokens import EventToken

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


# The role each field needs that reads or changes events, listeners or namespaces, at the
# root or nested, by "Type.field"; `None`: any authenticated caller. A nested field needs
# the role of the root field that lists the same things, so no path reaches data its
# root would refuse. Applied where each resolver is bound (`gated` below); a field that is
# bound through `gated` without an entry fails at import, and tests/test_auth.py fails
# when a field of the schema that returns such things has no entry.
FIELD_ROLES: Final[Mapping[str, str | None]] = {
    "Query.event_fetch": "fetch_event",
    "Query.events": "read_event",
    "Query.event_listeners": "read_event_listener",
    "Query.event_namespaces": "read_event_namespace",
    "Query.me": None,
    "Mutation.event_namespace_declare": "create_event_namespace",
    "Mutation.event_namespace_delete": "delete_event_namespace",
    "Mutation.event_listener_declare": "create_event_listener",
    "Mutation.event_listener_create": "create_event_listener",
    "Mutation.event_listener_delete": "delete_event_listener",
    "Mutation.event_send": "send_event",
    "Mutation.event_acknowledge": "acknowledge_event",
    "Mutation.event_silence": "silence_event",
    "Mutation.event_unsilence": "unsilence_event",
    "Mutation.event_rerun": "rerun_event",
    "FullEventPaged.objects": "read_event",
    "ListenerPaged.objects": "read_event_listener",
    "NamespacePaged.objects": "read_event_namespace",
    "FullEvent.listener": "read_event_listener",
    "Listener.namespace": "read_event_namespace",
    "Listener.events": "read_event",
    "Namespace.listeners": "read_event_listener",
    "Actor.event_namespaces": "read_event_namespace",
    "Actor.event_listeners": "read_event_listener",
}


def require_root_role(principal: auth.Principal, field_name: str) -> None:
    """Raise `PermissionDenied` unless `principal` has the role of the Query or Mutation
    field `field_name` (the console applies the same table as GraphQL); unmapped fails closed."""
    for type_name in ("Query", "Mutation"):
        key = f"{type_name}.{field_name}"
        if key in FIELD_ROLES:
            role = FIELD_ROLES[key]
            if role is not None and not principal.has(role):
                raise errors.PermissionDenied()
            return
    raise errors.PermissionDenied()


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


R = TypeVar("R")
Resolver = Callable[..., Awaitable[R]]
F = TypeVar("F", bound=Callable[..., Any])


def gated(bindable: ObjectType, field_name: str) -> Callable[[F], F]:
    """Bind the decorated resolver to `field_name` of `bindable`, behind its FIELD_ROLES role.

    The check runs before the resolver is called, so a refused field starts no work; a
    synchronous resolver stays synchronous (broker/http/plans.py runs those inline).
    """
    role = FIELD_ROLES[f"{bindable.name}.{field_name}"]  # unmapped: fails at import

    def bind(resolver: F) -> F:
        @wraps(resolver)
        def checked(obj: Any, info: GraphQLResolveInfo[Context], **kwargs: Any) -> Any:
            if role is not None and role not in info.context.roles:
                raise errors.PermissionDenied()
            return resolver(obj, info, **kwargs)

        bindable.set_field(field_name, checked)
        return resolver

    return bind


def root(resolver: Resolver[R]) -> Resolver[R]:
    """A Query/Mutation resolver written as `resolver(context, **arguments)`."""

    @wraps(resolver)
    async def adapted(obj: Any, info: GraphQLResolveInfo[Context], **kwargs: Any) -> R:
        return await resolver(info.context, **kwargs)

    return adapted


# Scalars ------------------------------------------------------------------------------------

uuid_scalar = ScalarType("UUID")


@uuid_scalar.serializer
def _serialize_uuid(value: UUID) -> str:
    return str(value)


@uuid_scalar.value_parser
def _parse_uuid(value: Any) -> UUID:
    if not isinstance(value, str):
        raise errors.InvalidUUID()
    try:
        return UUID(value)
    except ValueError:
        raise errors.InvalidUUID() from None


token_scalar = ScalarType("EventToken")


@token_scalar.serializer
def _serialize_token(value: EventToken) -> str:
    return value.encode()


@token_scalar.value_parser
def _parse_token(value: Any) -> EventToken:
    return EventToken.decode(value)


cursor_scalar = ScalarType("Cursor")


@cursor_scalar.value_parser
def _parse_cursor(value: Any) -> str:
    cursors.decode(value)
    return str(value)


# Input --------------------------------------------------------------------------------------


def _list(values: list[Any] | None, what: str, max_length: int | None = None) -> list[Any] | None:
    if values is not None:
        check_list(what, values, max_length)
    return values


def _set(
    values: list[Any] | None, what: str, max_length: int | None = None
) -> frozenset[Any] | None:
    values = _list(values, what, max_length)
    return None if values is None else frozenset(values)


def _names(values: list[str] | None, what: str) -> frozenset[str] | None:
    """Names to match, each as it may be stored (see `operations.spellings`)."""
    values = _list(values, what, MAX_NAME_LENGTH)
    return None if values is None else frozenset(s for v in values for s in spellings(v))


def namespace_filter(data: dict[str, Any] | None) -> NamespaceFilter:
    data = data or {}
    names = _names(data.get("names"), "names")
    return NamespaceFilter(
        names=None if names is None else frozenset(canonical_namespace(n) for n in names),
        owners=_set(data.get("owners"), "owners"),
        public=data.get("public"),
    )


def listener_filter(data: dict[str, Any] | None) -> ListenerFilter:
    data = data or {}
    namespaces = data.get("namespaces")
    return ListenerFilter(
        uuids=_set(data.get("uuids"), "uuids"),
        user_keys=_names(data.get("user_keys"), "user_keys"),
        owners=_set(data.get("owners"), "owners"),
        routing_keys=_names(data.get("routing_keys"), "routing_keys"),
        namespaces=None if namespaces is None else namespace_filter(namespaces),
    )


def event_selection(data: dict[str, Any] | None) -> EventSelection:
    data = data or {}
    return EventSelection(
        subjects=_set(data.get("subjects"), "subjects", MAX_SUBJECT_LENGTH),
        priorities=_set(data.get("priorities"), "priorities"),
        silenced=data.get("silenced"),
    )


def paged(page: Page[Any]) -> dict[str, Any]:
    return {"objects": page.objects, "page_info": {"next_cursor": page.next_cursor}}


# Query --------------------------------------------------------------------------------------

query = QueryType()


@gated(query, "event_fetch")
@root
async def _event_fetch(ctx: Context, filter: dict[str, Any]) -> PendingEvent | None:
    return await ctx.broker.fetch(ctx.caller, filter["listener"], filter.get("wait"))


@gated(query, "events")
@root
async def _events(
    ctx: Context,
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    data = filter or {}
    listeners = data.get("listeners")
    page = await ctx.broker.events(
        ctx.caller,
        None if listeners is None else listener_filter(listeners),
        event_selection(data),
        limit,
        cursor,
    )
    ctx.spend(page.objects)
    return paged(page)


@gated(query, "event_listeners")
@root
async def _event_listeners(
    ctx: Context,
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    return paged(await ctx.broker.listeners(ctx.caller, listener_filter(filter), limit, cursor))


@gated(query, "event_namespaces")
@root
async def _event_namespaces(
    ctx: Context,
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    return paged(await ctx.broker.namespaces(ctx.caller, namespace_filter(filter), limit, cursor))


@gated(query, "me")
@root
async def _me(ctx: Context) -> dict[str, Any]:
    return {"actor": ctx.caller}


# Mutation -----------------------------------------------------------------------------------

mutation = MutationType()


@gated(mutation, "event_namespace_declare")
@root
async def _namespace_declare(ctx: Context, input: dict[str, Any]) -> Namespace:
    return await ctx.broker.declare_namespace(ctx.caller, input["name"], input["public"])


@gated(mutation, "event_namespace_delete")
@root
async def _namespace_delete(ctx: Context, input: dict[str, Any]) -> bool:
    return await ctx.broker.delete_namespace(ctx.caller, input["name"])


@gated(mutation, "event_listener_declare")
@gated(mutation, "event_listener_create")
@root
async def _listener_declare(ctx: Context, input: dict[str, Any]) -> Listener:
    return await ctx.broker.declare_listener(
        ctx.caller, input["namespace"], input["user_key"], input["routing_key"]
    )


@gated(mutation, "event_listener_delete")
@root
async def _listener_delete(ctx: Context, input: dict[str, Any]) -> bool:
    return await ctx.broker.delete_listener(
        ctx.caller, input["uuid"], input["delete_pending_events"]
    )


@gated(mutation, "event_send")
@root
async def _send(ctx: Context, input: dict[str, Any]) -> bool:
    return await ctx.broker.send(
        ctx.caller, input["namespace"], input["routing_key"], input["subject"], input["priority"]
    )


@gated(mutation, "event_acknowledge")
@root
async def _acknowledge(ctx: Context, input: EventToken | dict[str, EventToken]) -> bool:
    # The seed endpoint passes the token itself, the released one `{token: ...}`.
    token = input if isinstance(input, EventToken) else input["token"]
    return await ctx.broker.acknowledge(ctx.caller, token)


@gated(mutation, "event_silence")
@root
async def _silence(ctx: Context, input: dict[str, Any]) -> bool:
    check_list("subjects", input["subjects"], MAX_SUBJECT_LENGTH)
    return await ctx.broker.silence(
        ctx.caller, listener_filter(input["listeners"]), input["subjects"]
    )


@gated(mutation, "event_unsilence")
@root
async def _unsilence(ctx: Context, input: dict[str, Any]) -> bool:
    listeners = input.get("listeners")
    return await ctx.broker.unsilence(
        ctx.caller,
        None if listeners is None else listener_filter(listeners),
        _list(input.get("subjects"), "subjects", MAX_SUBJECT_LENGTH),
        _list(input.get("priorities"), "priorities"),
    )


@gated(mutation, "event_rerun")
@root
async def _rerun(ctx: Context, input: dict[str, Any]) -> list[PendingEvent]:
    listeners = input.get("listeners")
    return await ctx.broker.rerun(
        ctx.caller,
        None if listeners is None else listener_filter(listeners),
        _list(input.get("subjects"), "subjects", MAX_SUBJECT_LENGTH),
        _list(input.get("priorities"), "priorities"),
        input.get("silenced"),
    )


# Object types -------------------------------------------------------------------------------

event_type = ObjectType("Event")


@event_type.field("token")
def _event_token(event: PendingEvent, info: GraphQLResolveInfo[Context]) -> EventToken:
    return EventToken(event.listener, event.generation, event.subject)


full_event_type = ObjectType("FullEvent")


@gated(full_event_type, "listener")
async def _full_event_listener(
    event: PendingEvent, info: GraphQLResolveInfo[Context]
) -> Listener | None:
    return await info.context.listener(event.listener, info)


listener_type = ObjectType("Listener")


@gated(listener_type, "namespace")
async def _listener_namespace(
    listener: Listener, info: GraphQLResolveInfo[Context]
) -> Namespace | None:
    return await info.context.namespace(listener.namespace, info)


@gated(listener_type, "events")
async def _listener_events(
    listener: Listener,
    info: GraphQLResolveInfo[Context],
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> list[PendingEvent]:
    ctx: Context = info.context
    selection = event_selection(filter)
    async with ctx.nested(info):
        found = await ctx.broker.listener_events(ctx.caller, listener, selection, limit, cursor)
    return ctx.spend(found)


namespace_type = ObjectType("Namespace")


@gated(namespace_type, "listeners")
async def _namespace_listeners(
    namespace: Namespace,
    info: GraphQLResolveInfo[Context],
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> list[Listener]:
    ctx: Context = info.context
    selection = listener_filter(filter)
    bound = ListenerFilter(
        uuids=selection.uuids,
        user_keys=selection.user_keys,
        owners=selection.owners,
        routing_keys=selection.routing_keys,
        namespaces=NamespaceFilter(names=frozenset([namespace.name])),
    )
    async with ctx.nested(info):
        return (await ctx.broker.listeners(ctx.caller, bound, limit, cursor)).objects


actor_type = ObjectType("Actor")


@actor_type.field("uuid")
def _actor_uuid(caller: Caller, info: GraphQLResolveInfo[Context]) -> UUID:
    return caller.owner


@gated(actor_type, "event_namespaces")
async def _actor_namespaces(
    caller: Caller,
    info: GraphQLResolveInfo[Context],
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> list[Namespace]:
    selection = namespace_filter(filter)
    own = NamespaceFilter(selection.names, frozenset([caller.owner]), selection.public)
    return (await info.context.broker.namespaces(caller, own, limit, cursor)).objects


@gated(actor_type, "event_listeners")
async def _actor_listeners(
    caller: Caller,
    info: GraphQLResolveInfo[Context],
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> list[Listener]:
    selection = listener_filter(filter)
    own = ListenerFilter(
        selection.uuids,
        selection.user_keys,
        frozenset([caller.owner]),
        selection.routing_keys,
        selection.namespaces,
    )
    return (await info.context.broker.listeners(caller, own, limit, cursor)).objects


pages = [ObjectType(name) for name in ("FullEventPaged", "ListenerPaged", "NamespacePaged")]


def _page_objects(page: dict[str, Any], info: GraphQLResolveInfo[Context]) -> list[Any]:
    objects: list[Any] = page["objects"]
    return objects


for page_type in pages:
    gated(page_type, "objects")(_page_objects)


BINDABLES = [
    query,
    mutation,
    *pages,
    uuid_scalar,
    token_scalar,
    cursor_scalar,
    event_type,
    full_event_type,
    listener_type,
    namespace_type,
    actor_type,
]
