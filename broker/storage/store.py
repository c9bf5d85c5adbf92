"""The one object that talks to Redis: `Store`, composed of the storage modules beside it."""

from __future__ import annotations

from broker.storage.base import RedisClient, _lua, listener_script
from broker.storage.events import RETRY_PUMP_BATCH, Events, Fetched, UpdateAction
from broker.storage.ingest import FANOUT_GROUP, Ingest, IngestEntry, stream_id_order
from broker.storage.layout import claim_layout
from broker.storage.listeners import Listeners
from broker.storage.namespaces import NamespaceClaim, NamespaceGone, QuotaReached
from broker.storage.stats import ListenerRates, Stats

__all__ = [
    "FANOUT_GROUP",
    "RETRY_PUMP_BATCH",
    "Fetched",
    "IngestEntry",
    "ListenerRates",
    "NamespaceClaim",
    "NamespaceGone",
    "QuotaReached",
    "RedisClient",
    "Store",
    "UpdateAction",
    "_lua",
    "listener_script",
    "stream_id_order",
]


class Store(Listeners, Events, Ingest, Stats):
    """Storage operations; each listener operation is one atomic script in its slot.

    One object made of the parts in the modules beside this one (registry records and
    indexes, listener state, events, ingest, figures), all on one client and one set of
    scripts (`StoreBase`).
    """

    async def setup(self) -> None:
        """Create the ingest streams and their fan-out group; check the layout is unchanged.

        Raises `LayoutRefused` (before writing anything) when the data in Redis is in a
        layout this version does not read.
        """
        await claim_layout(self.redis, self.keys)
        await self.redis.hsetnx(self.keys.config, "ingest_shards", self.keys.shards)
        stored = int(await self.redis.hget(self.keys.config, "ingest_shards"))
        if stored != self.keys.shards:
            raise RuntimeError(
                f"BROKER_INGEST_SHARDS is {self.keys.shards}, but the data in Redis was "
                f"written with {stored}; it cannot change while data exists"
            )
        for shard in range(self.keys.shards):
            await self.ensure_ingest(shard)
        await self.ensure_indexes()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())
