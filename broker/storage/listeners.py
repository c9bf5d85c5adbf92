"""The registry's listener records, and each listener's state (created, subscribed, deleted)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from redis.client import NEVER_DECODE

from broker.models import Listener
from broker.storage.base import DECODE_ERRORS, owner_arg
from broker.storage.namespaces import (
    NamespaceGone,
    Namespaces,
    QuotaReached,
    _limit_arg,
    _listener,
    _listener_record,
    _namespace,
)

_MIGRATION_CONCURRENCY = 32
# Listener records a process keeps (records are fixed for a uuid's lifetime).
RECORD_CACHE = 100_000


class Listeners(Namespaces):
    """Listener records and identities in the registry, and each listener's own state."""

    async def ensure_indexes(self) -> None:
        """Index records written before the listing indexes existed (once per database).

        Safe while other processes run: each record is indexed by a script that first
        checks it still exists, and indexing twice changes nothing.
        """
        if await self.redis.hget(self.keys.config, "listing_indexes") == "1":
            return
        async for batch in self._hash_pages(self.keys.namespaces, "namespace", _namespace):
            for namespace in batch:
                await self._index_namespace(
                    keys=[
                        self.keys.namespaces,
                        self.keys.namespace_order,
                        self.keys.owner_namespaces(str(namespace.owner)),
                    ],
                    args=[namespace.name],
                )
        async for listeners in self._hash_pages(self.keys.listeners, "listener", _listener):
            # A few at a time (redis-py runs no scripts in a cluster pipeline).
            for start in range(0, len(listeners), _MIGRATION_CONCURRENCY):
                await asyncio.gather(
                    *(
                        self._index_listener(
                            keys=[self.keys.listeners, *self._listener_index_keys(listener)],
                            args=[str(listener.uuid)],
                        )
                        for listener in listeners[start : start + _MIGRATION_CONCURRENCY]
                    )
                )
        await self.redis.hset(self.keys.config, "listing_indexes", "1")

    # Listeners --------------------------------------------------------------------------------

    async def claim_listener(
        self, listener: Listener, limit: int | None = None
    ) -> tuple[Listener | None, bool]:
        """Register the listener unless its identity is taken: (who holds it, created).

        The holder is None when its record cannot be read.

        Raises `QuotaReached` when its owner already has `limit` listeners, and
        `NamespaceGone` when its namespace was deleted meanwhile.
        """
        reply = await self._written(
            self._claim_listener,
            keys=[
                self.keys.identities,
                self.keys.listeners,
                self.keys.namespaces,
                *self._listener_index_keys(listener),
            ],
            args=[
                self._identity(listener),
                str(listener.uuid),
                _listener_record(listener),
                listener.namespace,
                _limit_arg(limit),
            ],
        )
        if int(reply[0]) == 0:
            raise NamespaceGone() if reply[1] == "namespace" else QuotaReached(str(reply[1]))
        holder = self._decode("listener", self.keys.listeners, str(reply[1]).encode(), _listener)
        return holder, int(reply[2]) == 1

    async def release_listener(self, listener: Listener) -> bool:
        """Remove the listener's registry record, identity and index entries at once."""
        removed = await self._written(
            self._release_listener,
            keys=[self.keys.identities, self.keys.listeners, *self._listener_index_keys(listener)],
            args=[self._identity(listener), str(listener.uuid)],
        )
        return bool(removed)

    async def holds_identity(self, listener: Listener) -> bool:
        """Whether the listener's identity still names it (not deleted, not replaced)."""
        held = await self.redis.hget(self.keys.identities, self._identity(listener))
        return bool(held == str(listener.uuid))

    async def get_listener(self, uuid: UUID) -> Listener | None:
        """The listener, or None when there is none or its record cannot be read."""
        raw = await self._raw_field(self.keys.listeners, str(uuid))
        if raw is None:
            return None
        return self._decode("listener", f"{self.keys.listeners}[{uuid}]", raw, _listener)

    async def listener_recorded(self, uuid: UUID) -> bool:
        """Whether a record is stored under the uuid, readable or not."""
        return bool(await self.redis.hexists(self.keys.listeners, str(uuid)))

    async def all_listeners(self) -> list[Listener]:
        found = []
        for uuid, raw in (await self._raw_fields(self.keys.listeners)).items():
            key = f"{self.keys.listeners}[{uuid}]"
            if (listener := self._decode("listener", key, raw, _listener)) is not None:
                found.append(listener)
        return found

    async def listener_topic(self, uuid: UUID) -> tuple[str, str] | None:
        """(namespace, routing key) from a listener's own state, when it has readable state."""
        meta = self.keys.listener(uuid).meta
        raw = await self.redis.execute_command(
            "HMGET", meta, "namespace", "routing_key", **{NEVER_DECODE: True}
        )
        try:
            namespace, routing_key = (part.decode() for part in raw)
        except DECODE_ERRORS:  # no state, or not readable: fan-out drops it from its topic
            return None
        return namespace, routing_key

    async def forget_unreadable_listener(self, uuid: UUID) -> None:
        """Remove a listener record that cannot be read, and any identity naming its uuid."""
        held = [
            identity
            for identity, holder in (await self._raw_fields(self.keys.identities)).items()
            if holder == str(uuid).encode()
        ]
        async with self.redis.pipeline(transaction=True) as pipe:
            if held:
                pipe.hdel(self.keys.identities, *held)
            pipe.hdel(self.keys.listeners, str(uuid))
            await pipe.execute()

    async def indexed_listeners(self, uuids: Sequence[str]) -> list[Listener]:
        """The records of `uuids` just read from an index, in that order.

        A record never changes for its uuid, so this process keeps the ones it read and
        asks Redis only for the others (a listener deleted since is no longer indexed).
        """
        missing = [uuid for uuid in uuids if uuid not in self._records]
        if missing:
            if len(self._records) + len(missing) > RECORD_CACHE:
                self._records.clear()
            self._records.update(
                (str(item.uuid), item) for item in await self.get_listeners(missing)
            )
        return [self._records[uuid] for uuid in uuids if uuid in self._records]

    async def get_listeners(self, uuids: Sequence[str]) -> list[Listener]:
        """The listeners of those `uuids` that exist, in the order given."""
        if not uuids:
            return []
        raw = await self.redis.execute_command(
            "HMGET", self.keys.listeners, *uuids, **{NEVER_DECODE: True}
        )
        found = []
        for uuid, item in zip(uuids, raw, strict=True):
            key = f"{self.keys.listeners}[{uuid}]"
            if item is not None and (held := self._decode("listener", key, item, _listener)):
                found.append(held)
        return found

    async def create_listener_state(self, listener: Listener) -> None:
        await self._written(
            self._create,
            keys=self.keys.listener(listener.uuid).as_list(),
            args=[str(listener.owner), listener.namespace, listener.routing_key, listener.user_key],
        )

    async def subscribe(self, listener: Listener) -> None:
        shard = self.keys.shard_of(listener.namespace, listener.routing_key)
        await self._written(
            self._subscribe,
            keys=[
                self.keys.topic(listener.namespace, listener.routing_key),
                self.keys.ingest(shard),
            ],
            args=[str(listener.uuid)],
        )

    async def delete_listener_state(
        self, listener: UUID, owner: UUID | None, delete_pending_events: bool
    ) -> int:
        """1 deleted (or gone), 0 refused for pending events, -1 another owner's."""
        return int(
            await self._written(
                self._delete,
                keys=self.keys.listener(listener).as_list(),
                args=[owner_arg(owner), "1" if delete_pending_events else "0"],
            )
        )

    async def unsubscribe(self, listener: Listener) -> None:
        topic = self.keys.topic(listener.namespace, listener.routing_key)
        await self.redis.hdel(topic, str(listener.uuid))
