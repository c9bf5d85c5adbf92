"""Role gates: which role each GraphQL field needs, applied where its resolver is bound."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Any, Final, TypeVar

from ariadne import ObjectType
from graphql import GraphQLResolveInfo, OperationType

from broker import auth, errors
from broker.http.context import Context
from broker.http.preflight import check_answer

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


R = TypeVar("R")
Resolver = Callable[..., Awaitable[R]]
F = TypeVar("F", bound=Callable[..., Any])


def gated(bindable: ObjectType, field_name: str) -> Callable[[F], F]:
    """Bind the decorated resolver to `field_name` of `bindable`, behind its FIELD_ROLES role.

    The check runs before the resolver is called, so a refused field starts no work; a
    synchronous resolver stays synchronous (broker/http/plans.py runs those inline). A
    mutation's whole selection is checked too, before it writes (broker/http/preflight.py).
    """
    role = FIELD_ROLES[f"{bindable.name}.{field_name}"]  # unmapped: fails at import
    writes = bindable.name == "Mutation"

    def bind(resolver: F) -> F:
        @wraps(resolver)
        def checked(obj: Any, info: GraphQLResolveInfo[Context], **kwargs: Any) -> Any:
            roles = info.context.roles
            if role is not None and role not in roles:
                raise errors.PermissionDenied()
            if writes:
                check_answer(info, roles, FIELD_ROLES)
            return resolver(obj, info, **kwargs)

        bindable.set_field(field_name, checked)
        return resolver

    return bind


def root(resolver: Resolver[R]) -> Resolver[R]:
    """A Query/Mutation resolver written as `resolver(context, **arguments)`."""

    @wraps(resolver)
    async def adapted(obj: Any, info: GraphQLResolveInfo[Context], **kwargs: Any) -> R:
        context = info.context
        if info.operation.operation is not OperationType.MUTATION:
            return await resolver(context, **kwargs)
        # A mutation's root fields run one after the other, each writing on its own: one
        # refused after others wrote says so, since its error may make all `data` null.
        try:
            result = await resolver(context, **kwargs)
        except errors.BrokerError as error:
            if context.made:
                done = ", ".join(f"`{key}`" for key in context.made)
                error.message = f"{error.message} ({done} before it made their changes)"
                error.args = (error.message,)
            raise
        context.made.append(str(info.path.key))
        return result

    return adapted
