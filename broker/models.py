"""The nouns of the event system, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar
from uuid import UUID, uuid5

T = TypeVar("T")

MO_NAMESPACE = "mo"
DEFAULT_PRIORITY = 10000


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    owner: UUID
    public: bool


@dataclass(frozen=True, slots=True)
class Listener:
    uuid: UUID
    owner: UUID
    namespace: str
    routing_key: str
    user_key: str


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event waiting for one listener's acknowledgement."""

    listener: UUID
    subject: str
    priority: int
    silenced: bool
    generation: str
    created_ms: int  # when the first send of this pending event was accepted
    deliveries: int

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_ms / 1000, UTC)

    @property
    def uuid(self) -> UUID:
        """Stable per (listener, subject): the pending event's identity across re-sends."""
        return uuid5(self.listener, self.subject)


@dataclass(frozen=True, slots=True)
class EventSelection:
    """Which pending events of a listener an operation concerns; `None` = no restriction."""

    subjects: frozenset[str] | None = None
    priorities: frozenset[int] | None = None
    silenced: bool | None = None

    def matches(self, event: PendingEvent) -> bool:
        return (
            (self.subjects is None or event.subject in self.subjects)
            and (self.priorities is None or event.priority in self.priorities)
            and (self.silenced is None or event.silenced == self.silenced)
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, and what they may do beyond their own things."""

    owner: UUID
    admin: bool = False  # may manage other owners' namespaces, listeners and events
    read_all: bool = False  # sees every listener's events
    mo_emitter: bool = False  # may send into the built-in `mo` namespace


@dataclass(frozen=True, slots=True)
class NamespaceFilter:
    """Lists mean "any of" (an empty list matches nothing); `None` means no restriction."""

    names: frozenset[str] | None = None
    owners: frozenset[UUID] | None = None
    public: bool | None = None

    def matches(self, namespace: Namespace) -> bool:
        return (
            (self.names is None or namespace.name in self.names)
            and (self.owners is None or namespace.owner in self.owners)
            and (self.public is None or namespace.public == self.public)
        )


@dataclass(frozen=True, slots=True)
class ListenerFilter:
    uuids: frozenset[UUID] | None = None
    user_keys: frozenset[str] | None = None
    owners: frozenset[UUID] | None = None
    routing_keys: frozenset[str] | None = None
    namespaces: NamespaceFilter | None = None

    def matches(self, listener: Listener, namespaces: dict[str, Namespace]) -> bool:
        if self.namespaces is not None:
            namespace = namespaces.get(listener.namespace)
            if namespace is None or not self.namespaces.matches(namespace):
                return False
        return (
            (self.uuids is None or listener.uuid in self.uuids)
            and (self.user_keys is None or listener.user_key in self.user_keys)
            and (self.owners is None or listener.owner in self.owners)
            and (self.routing_keys is None or listener.routing_key in self.routing_keys)
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    objects: list[T]
    next_cursor: str | None
