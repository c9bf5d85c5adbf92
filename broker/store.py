"""The one module that talks to Redis: registry, listener state, ingest streams."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from broker.keys import Keys
from broker.models import EventSelection, Listener, Namespace, PendingEvent
from broker.pipelining import Pipeliner
from broker.replication import Command, Replication, ScriptCall, run_confirmed

RedisClient = Redis | RedisCluster
UpdateAction = Literal["silence", "unsilence", "rerun"]

FANOUT_GROUP = "fanout"
# Due retries moved back into lanes per fetch: bounds the cost of one fetch.
RETRY_PUMP_BATCH = 32
_PAGE = 500
# The per-minute activity ring in each listener's meta hash (lua/listener.lua, count_rate).
RATE_SLOTS = 16
# Entries one subject search looks at per HSCAN call.
_SEARCH_SCAN = 1000


def _lua(name: str) -> str:
    return (resources.files("broker") / "lua" / f"{name}.lua").read_text()


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


def _pending(listener: UUID, subject: str, packed: str) -> PendingEvent:
    gen, priority, silenced, created, deliveries, *_ = packed.split("|")
    return PendingEvent(
        listener=listener,
        subject=subject,
        priority=int(priority),
        silenced=silenced == "1",
        generation=gen,
        created_ms=int(created),
        deliveries=int(deliveries),
    )


def subject_of(order_key: str) -> str:
    return order_key.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class ListenerRates:
    """Events stored for a listener and acknowledgements by it, per minute, lately."""

    stored_per_minute: float
    acknowledged_per_minute: float


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch found: an event, or when the next one is due."""

    event: PendingEvent | None
    next_due_ms: int | None = None  # with no event: when a back-off ends, if any
    owned: bool = True  # False: unknown listener or another owner's


def _namespace(raw: str) -> Namespace:
    data = json.loads(raw)
    return Namespace(name=data["name"], owner=UUID(data["owner"]), public=data["public"])


def _listener(raw: str) -> Listener:
    data = json.loads(raw)
    return Listener(
        uuid=UUID(data["uuid"]),
        owner=UUID(data["owner"]),
        namespace=data["namespace"],
        routing_key=data["routing_key"],
        user_key=data["user_key"],
    )


def _now_ms() -> int:
    """This process's clock in ms: the minute the console's activity counts go into."""
    return int(time.time() * 1000)


def _owner_arg(owner: UUID | None) -> str:
    return "" if owner is None else str(owner)


class Store:
    """Storage operations; each listener operation is one atomic script in its slot."""

    def __init__(
        self, redis: RedisClient, keys: Keys, replication: Replication | None = None
    ) -> None:
        # Any: redis-py's annotations cannot know that replies are decoded to str.
        self.redis: Any = redis
        self.keys = keys
        self.replication = replication or Replication()
        prelude = _lua("listener")
        listener_script = {
            name: redis.register_script(prelude + "\n" + _lua(name))
            for name in ("fetch", "acknowledge", "apply", "update", "delete", "create")
        }
        self._fetch = listener_script["fetch"]
        self._acknowledge = listener_script["acknowledge"]
        self._apply = listener_script["apply"]
        self._update = listener_script["update"]
        self._delete = listener_script["delete"]
        self._create = listener_script["create"]
        self._send = redis.register_script(_lua("send"))
        self._subscribe = redis.register_script(_lua("subscribe"))
        self._claim_listener = redis.register_script(_lua("claim_listener"))
        self._ack_ingest = redis.register_script(_lua("ack_ingest"))
        # The calls every request makes (fetch, acknowledge, send) are pipelined.
        self.pipeliner = Pipeliner(redis, self.replication)

    async def _written(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """A script that writes something the broker confirms: replicated when asked."""
        if not self.replication.enabled:
            return await script(keys=keys, args=args)
        return await self._commands_written(keys[0], ScriptCall(script, keys, args))

    async def _commands_written(self, key: str, *calls: Command | ScriptCall) -> Any:
        """The last reply of `calls` (all in `key`'s slot), replicated when asked."""
        replies = await run_confirmed(self.redis, self.replication, key, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[-1]

    async def setup(self) -> None:
        """Create the ingest streams and their fan-out group; check the layout is unchanged."""
        await self.redis.hsetnx(self.keys.config, "ingest_shards", self.keys.shards)
        stored = int(await self.redis.hget(self.keys.config, "ingest_shards"))
        if stored != self.keys.shards:
            raise RuntimeError(
                f"BROKER_INGEST_SHARDS is {self.keys.shards}, but the data in Redis was "
                f"written with {stored}; it cannot change while data exists"
            )
        for shard in range(self.keys.shards):
            await self.ensure_ingest(shard)

    async def ensure_ingest(self, shard: int) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.ingest(shard), FANOUT_GROUP, "0", mkstream=True
            )
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # Namespaces -----------------------------------------------------------------------------

    async def claim_namespace(self, namespace: Namespace) -> Namespace:
        """Store the namespace unless its name is taken; return whoever holds the name."""
        record = {"name": namespace.name, "owner": str(namespace.owner), "public": namespace.public}
        if self.replication.enabled:
            await self._commands_written(
                self.keys.namespaces,
                ("HSETNX", self.keys.namespaces, namespace.name, json.dumps(record)),
            )
        else:
            await self.redis.hsetnx(self.keys.namespaces, namespace.name, json.dumps(record))
        found = await self.get_namespace(namespace.name)
        assert found is not None
        return found

    async def get_namespace(self, name: str) -> Namespace | None:
        raw = await self.redis.hget(self.keys.namespaces, name)
        return None if raw is None else _namespace(raw)

    async def all_namespaces(self) -> list[Namespace]:
        raw = await self.redis.hvals(self.keys.namespaces)
        return [_namespace(item) for item in raw]

    async def delete_namespace(self, name: str) -> None:
        await self.redis.hdel(self.keys.namespaces, name)

    # Listeners ------------------------------------------------------------------------------

    @staticmethod
    def _identity(listener: Listener) -> str:
        return json.dumps([str(listener.owner), listener.namespace, listener.user_key])

    async def claim_listener(self, listener: Listener) -> Listener:
        """Register the listener unless its identity is taken; return whoever holds it."""
        record = {
            "uuid": str(listener.uuid),
            "owner": str(listener.owner),
            "namespace": listener.namespace,
            "routing_key": listener.routing_key,
            "user_key": listener.user_key,
        }
        raw = await self._written(
            self._claim_listener,
            keys=[self.keys.identities, self.keys.listeners],
            args=[self._identity(listener), str(listener.uuid), json.dumps(record)],
        )
        return _listener(raw)

    async def get_listener(self, uuid: UUID) -> Listener | None:
        raw = await self.redis.hget(self.keys.listeners, str(uuid))
        return None if raw is None else _listener(raw)

    async def all_listeners(self) -> list[Listener]:
        raw = await self.redis.hvals(self.keys.listeners)
        return [_listener(item) for item in raw]

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
                args=[_owner_arg(owner), "1" if delete_pending_events else "0"],
            )
        )

    async def unsubscribe(self, listener: Listener) -> None:
        topic = self.keys.topic(listener.namespace, listener.routing_key)
        await self.redis.hdel(topic, str(listener.uuid))

    async def forget_listener(self, listener: Listener) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.identities, self._identity(listener))
            pipe.hdel(self.keys.listeners, str(listener.uuid))
            await pipe.execute()

    # Events ---------------------------------------------------------------------------------

    async def send(self, namespace: str, routing_key: str, subject: str, priority: int) -> bool:
        """Append to the topic's ingest stream; False when no listener exists (dropped)."""
        shard = self.keys.shard_of(namespace, routing_key)
        entry = await self.pipeliner.call(
            self._send,
            [self.keys.topic(namespace, routing_key), self.keys.ingest(shard)],
            [namespace, routing_key, subject, priority],
            confirm=True,
        )
        return entry is not None

    async def fetch(
        self, listener: UUID, owner: UUID | None, retry_min_ms: int, retry_max_ms: int
    ) -> Fetched:
        reply = await self.pipeliner.call(
            self._fetch,
            self.keys.listener(listener).as_list(),
            [_owner_arg(owner), retry_min_ms, retry_max_ms, RETRY_PUMP_BATCH],
        )
        if reply is None:
            return Fetched(None, owned=False)
        if len(reply) < 2:
            return Fetched(None, int(float(reply[0])) if reply else None)
        subject, priority, gen, silenced, created, deliveries = reply
        event = PendingEvent(
            listener=listener,
            subject=subject,
            priority=int(priority),
            silenced=int(silenced) == 1,
            generation=str(gen),
            created_ms=int(created),
            deliveries=int(deliveries),
        )
        return Fetched(event)

    async def acknowledge(
        self, listener: UUID, owner: UUID | None, subject: str, generation: str
    ) -> bool:
        deleted = await self.pipeliner.call(
            self._acknowledge,
            self.keys.listener(listener).as_list(),
            [_owner_arg(owner), subject, generation, _now_ms()],
            confirm=True,
        )
        return bool(deleted)

    async def update(
        self,
        listener: UUID,
        action: UpdateAction,
        selection: EventSelection,
        subjects: Sequence[str],
    ) -> list[PendingEvent]:
        """Silence/unsilence/rerun those of `subjects` that match; return what changed."""
        if not subjects:
            return []
        priorities = [] if selection.priorities is None else sorted(selection.priorities)
        silenced = "" if selection.silenced is None else str(int(selection.silenced))
        args: list[Any] = [
            action,
            silenced,
            -1 if selection.priorities is None else len(priorities),
        ]
        reply = await self._written(
            self._update,
            keys=self.keys.listener(listener).as_list(),
            args=[*args, *priorities, *subjects],
        )
        return [_pending(listener, reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    async def order_keys(self, listener: UUID, after: str | None, count: int) -> list[str]:
        """`PendingEvent.order_key`s of a listener in order, strictly after `after`."""
        low = "-" if after is None else f"({after}"
        index = self.keys.listener(listener).index
        return list(await self.redis.zrangebylex(index, low, "+", start=0, num=count))

    async def subjects(self, listener: UUID, after: str | None, count: int) -> list[str]:
        """A page of pending subjects; pass the last order key back as `after`."""
        return [subject_of(key) for key in await self.order_keys(listener, after, count)]

    async def pending(
        self, listener: UUID, selection: EventSelection, after: str | None, limit: int | None
    ) -> list[PendingEvent]:
        """Matching pending events in `order_key` order after `after`; O(events scanned)."""
        events_key = self.keys.listener(listener).events
        if selection.subjects is not None:
            # Few subjects named: look them up instead of scanning the index.
            subjects = sorted(selection.subjects)
            records = await self.redis.hmget(events_key, subjects) if subjects else []
            found = sorted(
                (
                    event
                    for subject, packed in zip(subjects, records, strict=True)
                    if packed is not None
                    and selection.matches(event := _pending(listener, subject, packed))
                    and (after is None or event.order_key > after)
                ),
                key=lambda event: event.order_key,
            )
            return found if limit is None else found[:limit]
        found = []
        while limit is None or len(found) < limit:
            keys = await self.order_keys(listener, after, _PAGE)
            if not keys:
                break
            subjects = [subject_of(key) for key in keys]
            records = await self.redis.hmget(events_key, subjects)
            for subject, packed in zip(subjects, records, strict=True):
                if packed is None:
                    continue
                event = _pending(listener, subject, packed)
                if selection.matches(event):
                    found.append(event)
                    if limit is not None and len(found) == limit:
                        break
            after = keys[-1]
        return found

    async def search_pending(self, listener: UUID, text: str, limit: int) -> list[PendingEvent]:
        """Up to `limit` pending events whose subject contains `text`; O(pending events)."""
        glob = "*" + "".join("\\" + c if c in "*?[]\\" else c for c in text) + "*"
        events_key = self.keys.listener(listener).events
        found: list[PendingEvent] = []
        cursor = 0
        while True:
            cursor, page = await self.redis.hscan(
                events_key, cursor, match=glob, count=_SEARCH_SCAN
            )
            found += [_pending(listener, subject, packed) for subject, packed in page.items()]
            if cursor == 0 or len(found) >= limit:
                break
        return sorted(found, key=lambda event: event.order_key)[:limit]

    async def retry_at(self, listener: UUID, subjects: Sequence[str]) -> list[int | None]:
        """When each subject's back-off ends (ms), `None` for those not waiting one."""
        if not subjects:
            return []
        scores = await self.redis.zmscore(self.keys.listener(listener).retry, list(subjects))
        return [None if score is None else int(score) for score in scores]

    async def count_pending(self, listener: UUID) -> int:
        return int(await self.redis.hlen(self.keys.listener(listener).events))

    # Fan-out --------------------------------------------------------------------------------

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
        args: list[Any] = [_now_ms()]
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

    # Console --------------------------------------------------------------------------------

    async def listener_rates(
        self, listeners: Sequence[UUID], now_ms: int, window_minutes: int
    ) -> list[ListenerRates]:
        """Per-minute rates over the `window_minutes` before the current minute and its part.

        The counts live in Redis (every pod sees the same); `now_ms` places the window.
        """
        if not 1 <= window_minutes < RATE_SLOTS:
            raise ValueError(f"window_minutes must be 1 to {RATE_SLOTS - 1}")
        fields = [f"rate:{kind}:{slot}" for kind in "sa" for slot in range(RATE_SLOTS)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for uuid in listeners:
                pipe.hmget(self.keys.listener(uuid).meta, fields)
            replies = await pipe.execute()
        minute = now_ms // 60000
        span_minutes = window_minutes + (now_ms % 60000) / 60000
        rates = []
        for reply in replies:
            totals = {"s": 0, "a": 0}
            for field, held in zip(fields, reply, strict=True):
                if held is None:
                    continue
                at, count = (int(part) for part in held.split("|"))
                if minute - window_minutes <= at <= minute:
                    totals[field.split(":")[1]] += count
            rates.append(ListenerRates(totals["s"] / span_minutes, totals["a"] / span_minutes))
        return rates
