"""Every Redis key the broker uses, built in one place.

Hash tags keep related keys in one cluster slot so that each Lua script only
touches one slot:

- `{P:registry}`    namespaces, listeners, their identities and listing indexes (rarely written);
- `{P:s<N>}`        one ingest shard: its stream and the listener sets of the topics
                    (namespace, routing key) that hash to it;
- `{P:l:<uuid>}`    everything of one listener: its lanes, pending events and retries.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class ListenerKeys:
    """The keys of one listener, in the order the listener scripts take them."""

    meta: str  # hash: owner, namespace, routing_key, user_key, generation and entry counters
    events: str  # hash: subject -> packed pending-event record (records.py)
    index: str  # sorted set: subject -> creation ms, for paging (lua/page.lua) and ages
    lanes: str  # sorted set: ranks whose lane may hold undelivered entries
    retry: str  # sorted set: subject -> ms when its back-off ends (delivered events)
    lane_prefix: str  # + rank = a lane stream; not a key itself

    def as_list(self) -> list[str]:
        return [self.meta, self.events, self.index, self.lanes, self.retry, self.lane_prefix]


class Keys:
    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.shards = shards
        registry = f"{prefix}:{{{prefix}:registry}}"
        self.namespaces = f"{registry}:namespaces"  # hash: name -> json
        # hash: fold of a name (broker/inputs.py) -> the name claiming it, so no lookalike
        # of an existing namespace name can be claimed.
        self.namespace_folds = f"{registry}:namespace_folds"
        self.listeners = f"{registry}:listeners"  # hash: uuid -> json
        self.identities = f"{registry}:identities"  # hash: owner/namespace/user_key -> uuid
        self.config = f"{registry}:config"  # hash: layout facts fixed for the data's lifetime
        # Listing indexes (sorted sets, all scores 0, so members are in lexical order for
        # keyset paging), kept by the same scripts that write the records above.
        self.listener_order = f"{registry}:ix:listeners"  # every listener uuid
        self.namespace_order = f"{registry}:ix:namespaces"  # every namespace name
        self._registry = registry
        # Pub/sub channel (not a key): listeners that may have become fetchable.
        self.notify_channel = f"{prefix}:notify"

    def owner_listeners(self, owner: str) -> str:
        """Sorted set: the uuids of one owner's listeners."""
        return f"{self._registry}:ix:owner-listeners:{owner}"

    def owner_namespaces(self, owner: str) -> str:
        """Sorted set: the names of one owner's namespaces."""
        return f"{self._registry}:ix:owner-namespaces:{owner}"

    def namespace_listeners(self, namespace: str) -> str:
        """Sorted set: the uuids of the listeners in one namespace."""
        # Length-prefixed like `topic`: no name can spell another's key.
        return f"{self._registry}:ix:namespace-listeners:{len(namespace)}:{namespace}"

    def shard_of(self, namespace: str, routing_key: str) -> int:
        return zlib.crc32(f"{namespace}\0{routing_key}".encode()) % self.shards

    def ingest(self, shard: int) -> str:
        """The stream `event_send` appends to; read by the fan-out group."""
        return f"{self.prefix}:{{{self.prefix}:s{shard}}}:ingest"

    def topic(self, namespace: str, routing_key: str) -> str:
        """Hash: listener uuid -> ingest id at registration (older entries are not theirs)."""
        shard = self.shard_of(namespace, routing_key)
        # Length-prefixed so that no (namespace, routing_key) pair can spell another's key.
        topic = f"{len(namespace)}:{namespace}:{routing_key}"
        return f"{self.prefix}:{{{self.prefix}:s{shard}}}:topic:{topic}"

    def listener_stats(self, uuid: UUID) -> list[str]:
        """A listener's meta, events and index keys (as `listener`), for lua/stats.lua."""
        tag = f"{self.prefix}:{{{self.prefix}:l:{uuid}}}"
        return [f"{tag}:meta", f"{tag}:events", f"{tag}:index"]

    def listener(self, uuid: UUID) -> ListenerKeys:
        tag = f"{self.prefix}:{{{self.prefix}:l:{uuid}}}"
        return ListenerKeys(
            meta=f"{tag}:meta",
            events=f"{tag}:events",
            index=f"{tag}:index",
            lanes=f"{tag}:lanes",
            retry=f"{tag}:retry",
            lane_prefix=f"{tag}:lane:",
        )
