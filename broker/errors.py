"""Errors users see: each carries the exact message OS2mo returns for the same case.

`BrokerError` is the only kind of exception whose text reaches a client (besides
graphql-core's own GraphQLErrors): anything else is an internal error, logged and
answered "Internal server error". Every user-facing message lives here.
"""

from __future__ import annotations


class BrokerError(Exception):
    """A refused request. `str(error)` is the message shown in `errors[].message`."""

    message: str = "Request refused"

    def __init__(self, message: str | None = None) -> None:
        # graphql-core reads `.message` when it exists, so keep it the shown text.
        self.message = message or self.message
        super().__init__(self.message)


class NotAuthenticated(BrokerError):
    message = "User is not authenticated"


class PermissionDenied(BrokerError):
    message = "No policy approved the access"


class InvalidInput(BrokerError):
    """Input that is well-typed GraphQL but breaks a rule of the contract."""


class PriorityNotNatural(InvalidInput):
    message = "priority must be natural"


class InvalidUUID(InvalidInput):
    """A UUID scalar that is not a UUID string (graphql-core prefixes where it was)."""

    message = "Could not parse UUID"


class InvalidToken(InvalidInput):
    message = "Could not parse EventToken"


class InvalidCursor(InvalidInput):
    message = "Could not parse Cursor"


class SubjectTooLarge(InvalidInput):
    message = "Too large subject. Only send identifiers as the subject, not data"


class DocumentUnchecked(BrokerError):
    """The process that checks new documents died twice on this one."""

    message = "The document could not be checked; try again later."


class NamespaceNotFound(BrokerError):
    message = "Namespace does not exist."


class ListenerNamespaceNotFound(BrokerError):
    # OS2mo words this one without the full stop; clients match on it.
    message = "Namespace does not exist"


class NotNamespaceOwner(BrokerError):
    message = "You are not the owner of that namespace."


class NamespaceNotPublic(BrokerError):
    message = "Namespace already exists, but is non-public and you are not the owner."


class NamespaceClaimed(BrokerError):
    message = "Namespace already claimed by another owner."


class NamespacePublicMismatch(BrokerError):
    def __init__(self, public: bool) -> None:
        super().__init__(f"Namespace already exists with public={str(public).lower()}.")


class NamespaceBuiltIn(BrokerError):
    message = "The built-in namespace cannot be changed or deleted."


class NamespaceHasListeners(BrokerError):
    message = (
        "There are still listeners for this namespace. Use the `event_listener_delete` mutator."
    )


class ListenerRoutingKeyMismatch(BrokerError):
    message = "There already exists a listener with this user_key and a different routing_key"


class ListenerHasPendingEvents(BrokerError):
    message = (
        "There are pending events for this listener. Consider carefully if these need to be "
        "handled first. You can delete the listener anyway with `delete_pending_events`."
    )


class StorageUnavailable(BrokerError):
    message = "The event store is unavailable; try again shortly."


class StoreFull(BrokerError):
    message = (
        "The event store is full: nothing was stored. Try again once listeners have "
        "acknowledged events or Redis has more memory."
    )


class NotReplicated(BrokerError):
    message = (
        "The event store did not confirm the write on enough replicas in time "
        "(BROKER_REDIS_WAIT_REPLICAS); it may or may not be kept. Try again: a re-send coalesces."
    )


class NamespaceLookalike(BrokerError):
    def __init__(self, existing: str) -> None:
        super().__init__(
            f"Namespace name is too much like the existing namespace '{existing}' "
            "(they differ only in case, width, invisible characters or lookalike letters)."
        )


class RecordUnreadable(BrokerError):
    """A stored record that cannot be read (an older layout, or damaged) is in the way."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"The stored record of this {what} cannot be read; an admin can delete it."
        )


class NamespaceQuota(BrokerError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already own {limit} namespaces, the most allowed "
            "(BROKER_MAX_NAMESPACES_PER_OWNER). Delete one with `event_namespace_delete` first."
        )


class ListenerQuota(BrokerError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already own {limit} listeners, the most allowed "
            "(BROKER_MAX_LISTENERS_PER_OWNER). Delete one with `event_listener_delete` first."
        )
