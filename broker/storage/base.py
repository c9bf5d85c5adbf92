"""What every part of the store shares: client, keys, scripts, confirmed writes, robust reads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE

from broker.models import Listener
from broker.storage.keys import Keys
from broker.storage.pipelining import Pipeliner
from broker.storage.replication import Command, Replication, ScriptCall, run_confirmed

T = TypeVar("T")
RedisClient = Redis | RedisCluster
# Told the kind ("namespace", "listener", "event", "listener_state") of each record skipped.
UnreadableHook = Callable[[str], None]

log = logging.getLogger(__name__)
# What a stored record that cannot be read raises while it is decoded.
DECODE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)
# Keys of unreadable records already logged: each is logged once per process (bounded).
_REPORTED_MAX = 10_000


def _lua(name: str) -> str:
    return (resources.files("broker.storage") / "lua" / f"{name}.lua").read_text()


def listener_script(name: str) -> str:
    """The source of a listener script: records.lua and listener.lua, then its own."""
    return "\n".join((_lua("records"), _lua("listener"), _lua(name)))


def now_ms() -> int:
    """This process's clock in ms: the minute the console's activity counts go into."""
    return int(time.time() * 1000)


def owner_arg(owner: UUID | None) -> str:
    return "" if owner is None else str(owner)


class StoreBase:
    """The client, the keys and the scripts every part of `Store` shares.

    Also the two things they all do: writes the broker confirms (replicated when asked),
    and reading stored records robustly (an unreadable one is skipped, counted, logged).
    """

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

    # Reading records --------------------------------------------------------------------------
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
