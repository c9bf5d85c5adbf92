"""The ingest streams: what `event_send` appends and the fan-out reads, applies and deletes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.exceptions import ResponseError

from broker.storage.base import StoreBase, now_ms

FANOUT_GROUP = "fanout"


@dataclass(frozen=True, slots=True)
class IngestEntry:
    """One accepted `event_send`, waiting to be fanned out."""

    id: str
    namespace: str
    routing_key: str
    subject: str
    priority: int

    @property
    def created_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

    @classmethod
    def parse(cls, entry_id: str, fields: dict[str, str]) -> IngestEntry:
        return cls(entry_id, fields["n"], fields["r"], fields["s"], int(fields["p"]))


def stream_id_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


class Ingest(StoreBase):
    """The ingest streams `event_send` appends to, and applying their entries to listeners."""

    async def ensure_ingest(self, shard: int) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.ingest(shard), FANOUT_GROUP, "0", mkstream=True
            )
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def read_ingest(
        self, shard: int, consumer: str, count: int, block_ms: int
    ) -> list[IngestEntry]:
        reply = await self.redis.xreadgroup(
            FANOUT_GROUP, consumer, {self.keys.ingest(shard): ">"}, count=count, block=block_ms
        )
        return [IngestEntry.parse(i, f) for _, entries in reply or [] for i, f in entries]

    async def claim_ingest(
        self, shard: int, consumer: str, min_idle_ms: int, count: int
    ) -> list[IngestEntry]:
        """Take over entries another fan-out worker read but did not finish."""
        reply = await self.redis.xautoclaim(
            self.keys.ingest(shard), FANOUT_GROUP, consumer, min_idle_ms, "0-0", count=count
        )
        return [IngestEntry.parse(i, f) for i, f in reply[1] if f]

    async def forget_idle_consumers(self, shard: int, idle_ms: int) -> int:
        """Drop fan-out consumers (gone processes) that hold nothing and did nothing lately.

        A live worker reads every few seconds, and a deleted one is recreated by its
        next read, so this only trims the names that restarts leave behind.
        """
        key = self.keys.ingest(shard)
        gone = [
            consumer["name"]
            for consumer in await self.redis.xinfo_consumers(key, FANOUT_GROUP)
            if int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_ms
        ]
        for name in gone:
            await self.redis.xgroup_delconsumer(key, FANOUT_GROUP, name)
        return len(gone)

    async def topic_listeners(self, namespace: str, routing_key: str) -> dict[UUID, str]:
        """Listener uuid -> the last ingest id that is older than the listener."""
        raw = await self.redis.hgetall(self.keys.topic(namespace, routing_key))
        return {UUID(uuid): since for uuid, since in raw.items()}

    async def apply(self, listener: UUID, entries: Sequence[IngestEntry]) -> int:
        """Coalesce entries into the listener's pending events; -1 if the listener is gone."""
        args: list[Any] = [now_ms()]
        for entry in entries:
            args += [entry.subject, entry.priority, entry.id, entry.created_ms]
        return int(
            await self._written(self._apply, keys=self.keys.listener(listener).as_list(), args=args)
        )

    async def drop_from_topic(self, namespace: str, routing_key: str, listener: UUID) -> None:
        await self.redis.hdel(self.keys.topic(namespace, routing_key), str(listener))

    async def ingest_backlog(self, shard: int) -> int:
        """Entries of a shard not yet fanned out (finished ones are deleted)."""
        return int(await self.redis.xlen(self.keys.ingest(shard)))

    async def ack_ingest(self, shard: int, ids: Sequence[str]) -> None:
        if ids:
            await self._ack_ingest(keys=[self.keys.ingest(shard)], args=list(ids))
