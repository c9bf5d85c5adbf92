"""The one module that talks to Redis: registry, listener state, ingest streams."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeVar
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, ResponseError

from broker.models import EventSelection, Listener, Namespace, PendingEvent
from broker.storage import records
from broker.storage.keys import Keys
from broker.storage.layout import claim_layout
from broker.storage.pipelining import Pipeliner
from broker.storage.replication import Command, Replication, ScriptCall, run_confirmed

T = TypeVar("T")
RedisClient = Redis | RedisCluster
UpdateAction = Literal["silence", "unsilence", "rerun"]
# Told the kind ("namespace", "listener", "event", "listener_state") of each record skipped.
UnreadableHook = Callable[[str], None]

log = logging.getLogger(__name__)
# What a stored record that cannot be read raises while it is decoded.
DECODE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)
# Keys of unreadable records already logged: each is logged once per process (bounded).
_REPORTED_MAX = 10_000

FANOUT_GROUP = "fanout"
# Due retries moved back into lanes per fetch: bounds the cost of one fetch.
RETRY_PUMP_BATCH = 32
_PAGE = 500
# The per-minute activity ring in each listener's meta hash (lua/listener.lua, count_rate).
RATE_SLOTS = 16
# Entries one subject search looks at per HSCAN call.
_SEARCH_SCAN = 1000
_MIGRATION_CONCURRENCY = 32
# Listener records a process keeps (records are fixed for a uuid's lifetime).
RECORD_CACHE = 100_000
# Listeners per stats script call on a single server (a call held Redis 0.15 ms in
# benchmarks/registry_cost.py; more where silenced events are scanned),
# and calls at once on a cluster (see `listener_figures`).
STATS_PER_CALL = 100
STATS_CONCURRENCY = 32


def _lua(name: str) -> str:
    return (resources.files("broker.storage") / "lua" / f"{name}.lua").read_text()


def listener_script(name: str) -> str:
    """The source of a listener script: records.lua and listener.lua, then its own."""
    return "\n".join((_lua("records"), _lua("listener"), _lua(name)))


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


def _order_key(event: PendingEvent) -> str:
    return records.order_key(event.created_ms, event.subject)


def stream_id_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


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


def _text(data: dict[str, Any], field: str) -> str:
    value = data[field]
    if not isinstance(value, str):
        raise TypeError(f"{field} is not a string")
    return value


def _namespace(raw: str | bytes) -> Namespace:
    """A stored namespace record; one of `DECODE_ERRORS` if it is not one."""
    data = json.loads(raw)
    public = data["public"]
    if not isinstance(public, bool):
        raise TypeError("public is not a boolean")
    return Namespace(name=_text(data, "name"), owner=UUID(_text(data, "owner")), public=public)


def _listener(raw: str | bytes) -> Listener:
    """A stored listener record; one of `DECODE_ERRORS` if it is not one."""
    data = json.loads(raw)
    return Listener(
        uuid=UUID(_text(data, "uuid")),
        owner=UUID(_text(data, "owner")),
        namespace=_text(data, "namespace"),
        routing_key=_text(data, "routing_key"),
        user_key=_text(data, "user_key"),
    )


def _now_ms() -> int:
    """This process's clock in ms: the minute the console's activity counts go into."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class NamespaceClaim:
    """What claiming a namespace name found."""

    held: Namespace | None  # who holds the name now (None: its record cannot be read)
    lookalike: str | None = None  # set instead: the existing name the new one folds onto


def _namespace_record(namespace: Namespace) -> str:
    return json.dumps(
        {"name": namespace.name, "owner": str(namespace.owner), "public": namespace.public}
    )


def _listener_record(listener: Listener) -> str:
    return json.dumps(
        {
            "uuid": str(listener.uuid),
            "owner": str(listener.owner),
            "namespace": listener.namespace,
            "routing_key": listener.routing_key,
            "user_key": listener.user_key,
        }
    )


def _limit_arg(limit: int | None) -> str:
    return "" if limit is None else str(limit)


class QuotaReached(Exception):
    """The owner holds as many namespaces or listeners as allowed."""


class NamespaceGone(Exception):
    """A listener's namespace was deleted while the listener was being declared."""


Figures = tuple[int, int, int | None, int | None]


def _figures(reply: list[Any]) -> Figures:
    pending, silenced, oldest, oldest_silenced = reply
    return (
        int(pending),
        int(silenced),
        int(oldest) if oldest != "" else None,
        int(oldest_silenced) if oldest_silenced != "" else None,
    )


def _owner_arg(owner: UUID | None) -> str:
    return "" if owner is None else str(owner)


class Store:
    """Storage operations; each listener operation is one atomic script in its slot."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        replication: Replication | None = None,
        unreadable: UnreadableHook | None = None,
    ) -> None:
        # Any: redis-py's annotations cannot know that replies are decoded to str.
        self.redis: Any = redis
        self.keys = keys
        self.replication = replication or Replication()
        self._count_unreadable = unreadable or (lambda kind: None)
        self._reported: set[str] = set()
        listener_scripts = {
            name: redis.register_script(listener_script(name))
            for name in ("fetch", "acknowledge", "apply", "update", "delete", "create")
        }
        self._fetch = listener_scripts["fetch"]
        self._acknowledge = listener_scripts["acknowledge"]
        self._apply = listener_scripts["apply"]
        self._update = listener_scripts["update"]
        self._delete = listener_scripts["delete"]
        self._create = listener_scripts["create"]
        self._stats = redis.register_script(_lua("records") + "\n" + _lua("stats"))
        self._page = redis.register_script(_lua("page"))
        self._send = redis.register_script(_lua("send"))
        self._subscribe = redis.register_script(_lua("subscribe"))
        registry_script = {
            name: redis.register_script(_lua(name))
            for name in (
                "claim_listener",
                "release_listener",
                "index_listener",
                "claim_namespace",
                "delete_namespace",
                "index_namespace",
            )
        }
        self._claim_listener = registry_script["claim_listener"]
        self._release_listener = registry_script["release_listener"]
        self._index_listener = registry_script["index_listener"]
        self._claim_namespace = registry_script["claim_namespace"]
        self._delete_namespace = registry_script["delete_namespace"]
        self._index_namespace = registry_script["index_namespace"]
        self._ack_ingest = redis.register_script(_lua("ack_ingest"))
        self._records: dict[str, Listener] = {}  # see `indexed_listeners`
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

    # Records --------------------------------------------------------------------------------
    # Registry records are read as bytes and decoded here, one by one: a record that an
    # older version (or anyone) left in another layout, or not in UTF-8, is skipped,
    # counted and logged, and never fails the listing, the scrape or the request.

    def unreadable(self, kind: str, key: str, error: BaseException) -> None:
        """Count a skipped record, and log it the first time its key is seen."""
        self._count_unreadable(kind)
        if key in self._reported:
            return
        if len(self._reported) >= _REPORTED_MAX:
            self._reported.clear()
        self._reported.add(key)
        log.warning("skipping an unreadable %s record at %s (%s)", kind, key, type(error).__name__)

    def _decode(
        self, kind: str, key: str, raw: bytes, decode: Callable[[str | bytes], T]
    ) -> T | None:
        try:
            return decode(raw.decode())
        except DECODE_ERRORS as error:  # UnicodeDecodeError is a ValueError
            self.unreadable(kind, key, error)
            return None

    async def _raw_field(self, key: str, field: str) -> bytes | None:
        raw: bytes | None = await self.redis.execute_command(
            "HGET", key, field, **{NEVER_DECODE: True}
        )
        return raw

    async def _raw_fields(self, key: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await self.redis.execute_command(
            "HGETALL", key, **{NEVER_DECODE: True}
        )
        return {field.decode(errors="replace"): value for field, value in raw.items()}

    # Namespaces -----------------------------------------------------------------------------

    def _namespace_keys(self, owner: UUID) -> list[str]:
        return [
            self.keys.namespaces,
            self.keys.namespace_folds,
            self.keys.namespace_order,
            self.keys.owner_namespaces(str(owner)),
        ]

    async def claim_namespace(
        self, namespace: Namespace, fold: str, limit: int | None = None
    ) -> NamespaceClaim:
        """Store the namespace unless its name (or its `fold`) is taken; say who holds it.

        One script claims the name, its fold, its listing indexes and the owner's quota
        together, so of two racing declares of names that fold alike (`Mo`, `mo`) only one
        can win, and no race passes the quota. Raises `QuotaReached` when the owner already
        holds `limit` namespaces.
        """
        reply = await self._written(
            self._claim_namespace,
            keys=self._namespace_keys(namespace.owner),
            args=[namespace.name, fold, _namespace_record(namespace), _limit_arg(limit)],
        )
        if int(reply[0]) == 0:
            raise QuotaReached(str(reply[1]))
        if int(reply[0]) == 2:
            return NamespaceClaim(None, str(reply[1]))
        return NamespaceClaim(await self.get_namespace(namespace.name))

    async def fold_namespaces(self, fold: Callable[[str], str]) -> None:
        """Claim the fold of every namespace stored without one (by an older version)."""
        names = []
        for raw in await self.redis.execute_command(
            "HKEYS", self.keys.namespaces, **{NEVER_DECODE: True}
        ):
            try:
                names.append(raw.decode())
            except UnicodeDecodeError as error:  # no request can name it: nothing to guard
                self.unreadable("namespace", f"{self.keys.namespaces}[{raw!r}]", error)
        folded = set(await self.redis.hvals(self.keys.namespace_folds))
        missing = {fold(name): name for name in sorted(names) if name not in folded}
        for folded_name, name in missing.items():
            await self.redis.hsetnx(self.keys.namespace_folds, folded_name, name)

    async def get_namespace(self, name: str) -> Namespace | None:
        """The namespace, or None when there is none or its record cannot be read."""
        raw = await self._raw_field(self.keys.namespaces, name)
        if raw is None:
            return None
        return self._decode("namespace", f"{self.keys.namespaces}[{name}]", raw, _namespace)

    async def namespace_recorded(self, name: str) -> bool:
        """Whether a record is stored under the name, readable or not."""
        return bool(await self.redis.hexists(self.keys.namespaces, name))

    async def all_namespaces(self) -> list[Namespace]:
        found = []
        for name, raw in (await self._raw_fields(self.keys.namespaces)).items():
            key = f"{self.keys.namespaces}[{name}]"
            if (namespace := self._decode("namespace", key, raw, _namespace)) is not None:
                found.append(namespace)
        return found

    async def delete_namespace(self, name: str, held: Namespace | None, fold: str) -> int:
        """1 deleted (or gone), 0 refused as listeners are in it, -1 it changed meanwhile.

        `held` is the record the caller was allowed to delete; None for one that cannot be
        read (only admins get here), which is deleted as stored.
        """
        record: str | bytes | None
        if held is None:
            record = await self._raw_field(self.keys.namespaces, name)
            if record is None:
                return 1
        else:
            record = _namespace_record(held)
        owner = "" if held is None else str(held.owner)
        return int(
            await self._written(
                self._delete_namespace,
                keys=[
                    self.keys.namespaces,
                    self.keys.namespace_folds,
                    self.keys.namespace_order,
                    self.keys.owner_namespaces(owner),
                    self.keys.namespace_listeners(name),
                ],
                args=[name, record, fold],
            )
        )

    async def get_namespaces(self, names: Sequence[str]) -> dict[str, Namespace]:
        """The namespaces of those `names` that exist."""
        if not names:
            return {}
        raw = await self.redis.execute_command(
            "HMGET", self.keys.namespaces, *names, **{NEVER_DECODE: True}
        )
        found = {}
        for name, item in zip(names, raw, strict=True):
            key = f"{self.keys.namespaces}[{name}]"
            if item is not None and (held := self._decode("namespace", key, item, _namespace)):
                found[name] = held
        return found

    # Listing indexes ------------------------------------------------------------------------

    async def index_page(
        self, indexes: Sequence[str], after: str | None, count: int, inclusive: bool = False
    ) -> list[str]:
        """The first `count` members after `after` of the union of `indexes`, in order.

        One round trip; each index answers at most `count` members (keyset paging).
        """
        if not indexes:
            return []
        low = "-" if after is None else f"{'[' if inclusive else '('}{after}"
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrangebylex(index, low, "+", start=0, num=count)
            replies = await pipe.execute()
        if len(replies) == 1:
            return list(replies[0])
        return sorted({member for reply in replies for member in reply})[:count]

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

    async def _hash_pages(
        self, key: str, kind: str, decode: Callable[[str | bytes], T]
    ) -> AsyncIterator[list[T]]:
        """The readable records of a hash, a page at a time (unreadable ones skipped)."""
        cursor = 0
        while True:
            cursor, page = await self.redis.execute_command(
                "HSCAN", key, cursor, "COUNT", _PAGE, **{NEVER_DECODE: True}
            )
            fields = (
                page.items() if isinstance(page, dict) else zip(page[::2], page[1::2], strict=True)
            )
            records = [
                self._decode(kind, f"{key}[{field!r}]", raw, decode) for field, raw in fields
            ]
            if found := [record for record in records if record is not None]:
                yield found
            if int(cursor) == 0:
                return

    # Listeners ------------------------------------------------------------------------------

    @staticmethod
    def _identity(listener: Listener) -> str:
        return json.dumps([str(listener.owner), listener.namespace, listener.user_key])

    def _listener_index_keys(self, listener: Listener) -> list[str]:
        return [
            self.keys.listener_order,
            self.keys.owner_listeners(str(listener.owner)),
            self.keys.namespace_listeners(listener.namespace),
        ]

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
                args=[_owner_arg(owner), "1" if delete_pending_events else "0"],
            )
        )

    async def unsubscribe(self, listener: Listener) -> None:
        topic = self.keys.topic(listener.namespace, listener.routing_key)
        await self.redis.hdel(topic, str(listener.uuid))

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
            created_ms=int(float(created)),
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
        return [
            records.pending_event(listener, reply[i], reply[i + 1], int(float(reply[i + 2])))
            for i in range(0, len(reply), 3)
        ]

    async def order_keys(self, listener: UUID, after: str | None, count: int) -> list[str]:
        """Order keys (records.py) of a listener's pending events, strictly after `after`.

        `after` must be an order key (`records.parse_order_key`): callers check cursors.
        """
        return [
            records.order_key(created, subject)
            for subject, created in await self._index_page(listener, after, count)
        ]

    async def _index_page(
        self, listener: UUID, after: str | None, count: int
    ) -> list[tuple[str, int]]:
        """(subject, created ms) of pending events in order, strictly after order key `after`."""
        cursor = ("", "") if after is None else records.parse_order_key(after)
        if cursor is None:
            raise ValueError(f"not an order key: {after!r}")
        reply = await self._page(keys=[self.keys.listener(listener).index], args=[*cursor, count])
        return [(reply[i], int(float(reply[i + 1]))) for i in range(0, len(reply), 2)]

    async def pending(
        self, listener: UUID, selection: EventSelection, after: str | None, limit: int | None
    ) -> list[PendingEvent]:
        """Matching pending events in order-key order after `after`; O(events scanned)."""
        if selection.subjects is not None:
            # Few subjects named: look them up instead of scanning the index.
            found = sorted(
                (
                    event
                    for event in await self._lookup(listener, sorted(selection.subjects))
                    if selection.matches(event) and (after is None or _order_key(event) > after)
                ),
                key=_order_key,
            )
            return found if limit is None else found[:limit]
        found = []
        while limit is None or len(found) < limit:
            page = await self._index_page(listener, after, _PAGE)
            if not page:
                break
            for event in await self._events(listener, page):
                if selection.matches(event):
                    found.append(event)
                    if limit is not None and len(found) == limit:
                        break
            after = records.order_key(page[-1][1], page[-1][0])
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
            found += await self._lookup(listener, list(page))
            if cursor == 0 or len(found) >= limit:
                break
        return sorted(found, key=_order_key)[:limit]

    async def _lookup(self, listener: UUID, subjects: Sequence[str]) -> list[PendingEvent]:
        """The pending events of those `subjects` that have one (and a readable record)."""
        if not subjects:
            return []
        index = self.keys.listener(listener).index
        scores = await self.redis.zmscore(index, list(subjects))
        return await self._events(
            listener,
            [
                (subject, int(score))
                for subject, score in zip(subjects, scores, strict=True)
                if score is not None
            ],
        )

    async def _events(
        self, listener: UUID, indexed: Sequence[tuple[str, int]]
    ) -> list[PendingEvent]:
        """The pending events of (subject, created ms) pairs read from `index`, in that order.

        One that is gone since, or whose record cannot be read, is left out.
        """
        if not indexed:
            return []
        events_key = self.keys.listener(listener).events
        packed = await self.redis.hmget(events_key, [subject for subject, _ in indexed])
        found = []
        for (subject, created), record in zip(indexed, packed, strict=True):
            if record is None:
                continue
            try:
                found.append(records.pending_event(listener, subject, record, created))
            except DECODE_ERRORS as error:
                self.unreadable("event", f"{events_key}[{subject}]", error)
        return found

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

    # Metrics --------------------------------------------------------------------------------

    async def listener_figures(self, listeners: Sequence[UUID], scan: int) -> list[Figures]:
        """Per listener: pending, silenced, oldest unsilenced ms, oldest silenced ms.

        lua/stats.lua tells the two kinds' oldest apart among the `scan` oldest events.
        On a single server one call reads `STATS_PER_CALL` listeners, all of them in one
        pipeline: with one call per listener, redis-py's work per call (packing, parsing)
        cost 150-300 ms of the client's CPU at 10,000 listeners against Redis' 45 ms. On a
        cluster, where one call's keys must share a slot and redis-py runs no scripts in a
        pipeline, one call per listener, `STATS_CONCURRENCY` at a time.
        """
        if isinstance(self.redis, RedisCluster):
            replies: list[Any] = []
            for start in range(0, len(listeners), STATS_CONCURRENCY):
                chunk = listeners[start : start + STATS_CONCURRENCY]
                replies += await asyncio.gather(
                    *(
                        self._stats(keys=self.keys.listener_stats(uuid), args=[scan])
                        for uuid in chunk
                    )
                )
            return [_figures(reply[0]) for reply in replies]
        calls = [
            [
                key
                for uuid in listeners[start : start + STATS_PER_CALL]
                for key in self.keys.listener_stats(uuid)
            ]
            for start in range(0, len(listeners), STATS_PER_CALL)
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in calls:
                pipe.evalsha(self._stats.sha, len(keys), *keys, scan)
            replies = await pipe.execute(raise_on_error=False)
        figures: list[Figures] = []
        for keys, reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):  # not loaded yet (or Redis restarted)
                reply = await self._stats(keys=keys, args=[scan])
            elif isinstance(reply, Exception):
                raise reply
            figures += [_figures(item) for item in reply]
        return figures
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._stats.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        for i, (keys, args) in enumerate(calls):
            if isinstance(replies[i], NoScriptError):  # not loaded yet (or Redis restarted)
                replies[i] = await self._stats(keys=keys, args=args)
            elif isinstance(replies[i], Exception):
                raise replies[i]
        return replies
