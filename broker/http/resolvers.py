"""GraphQL resolvers: parse input, call the domain, shape the output. Nothing else.

Each is bound behind its role (broker/http/gates.py); input is read with
broker/http/arguments.py, and what a request may spend is in its context
(broker/http/context.py).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ariadne import MutationType, ObjectType, QueryType
from graphql import GraphQLResolveInfo

from broker.http.arguments import (
    checked_list,
    cursor_scalar,
    event_selection,
    listener_filter,
    namespace_filter,
    paged,
    token_scalar,
    uuid_scalar,
)
from broker.http.context import Context
from broker.http.gates import gated, root
from broker.http.slices import sliced
from broker.models import Caller, Listener, ListenerFilter, Namespace, NamespaceFilter, PendingEvent
from broker.operations import MAX_SUBJECT_LENGTH, check_list
from broker.tokens import EventToken

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
    await ctx.admit(len(page.objects), root="events")
    return paged(page)


@gated(query, "event_listeners")
@root
async def _event_listeners(
    ctx: Context,
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    selection = listener_filter(filter)
    page = await ctx.broker.listeners(ctx.caller, selection, limit, cursor, ctx.room())
    await ctx.admit(len(page.objects), root="event_listeners")
    return paged(page)


@gated(query, "event_namespaces")
@root
async def _event_namespaces(
    ctx: Context,
    filter: dict[str, Any] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    selection = namespace_filter(filter)
    page = await ctx.broker.namespaces(ctx.caller, selection, limit, cursor, ctx.room())
    await ctx.admit(len(page.objects), root="event_namespaces")
    return paged(page)


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
        checked_list(input.get("subjects"), "subjects", MAX_SUBJECT_LENGTH),
        checked_list(input.get("priorities"), "priorities"),
    )


@gated(mutation, "event_rerun")
@root
async def _rerun(ctx: Context, input: dict[str, Any]) -> list[PendingEvent]:
    listeners = input.get("listeners")
    rerun = await ctx.broker.rerun(
        ctx.caller,
        None if listeners is None else listener_filter(listeners),
        checked_list(input.get("subjects"), "subjects", MAX_SUBJECT_LENGTH),
        checked_list(input.get("priorities"), "priorities"),
        input.get("silenced"),
    )
    # The reruns are made: the refusal of a list too long says so (`_made`).
    await ctx.admit(len(rerun), root="event_rerun")
    return sliced(rerun)


# Object types -------------------------------------------------------------------------------

event_type = ObjectType("Event")


@event_type.field("token")
def _event_token(event: PendingEvent, info: GraphQLResolveInfo[Context]) -> EventToken:
    return EventToken(event.listener, event.generation, event.subject)


full_event_type = ObjectType("FullEvent")


@gated(full_event_type, "listener")
def _full_event_listener(event: PendingEvent, info: GraphQLResolveInfo[Context]) -> Any:
    return info.context.listener(event.listener, info)  # the listener, or its read to await


listener_type = ObjectType("Listener")


@gated(listener_type, "namespace")
def _listener_namespace(listener: Listener, info: GraphQLResolveInfo[Context]) -> Any:
    return info.context.namespace(listener.namespace, info)  # or its read to await


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
    await ctx.admit(len(found), info)
    return sliced(found)


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
        found = (await ctx.broker.listeners(ctx.caller, bound, limit, cursor, ctx.room())).objects
    ctx.expect(info, len(found))
    await ctx.admit(len(found), info)
    return sliced(found)


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
    ctx: Context = info.context
    found = (await ctx.broker.namespaces(caller, own, limit, cursor, ctx.room())).objects
    ctx.expect(info, len(found))
    await ctx.admit(len(found), info)
    return sliced(found)


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
    ctx: Context = info.context
    found = (await ctx.broker.listeners(caller, own, limit, cursor, ctx.room())).objects
    ctx.expect(info, len(found))
    await ctx.admit(len(found), info)
    return sliced(found)


pages = [ObjectType(name) for name in ("FullEventPaged", "ListenerPaged", "NamespacePaged")]


def _page_objects(page: dict[str, Any], info: GraphQLResolveInfo[Context]) -> list[Any]:
    objects: list[Any] = page["objects"]
    info.context.expect(info, len(objects))
    return sliced(objects)


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
