"""Checks that the Redis server can keep events: version, eviction policy, persistence.

Read from INFO (which managed Redis services allow) and, for the save schedule only,
CONFIG GET (which many of them disable: then the check says so and goes on). On a
cluster every master is checked.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from broker.settings import Settings
from broker.storage.connection import UNAVAILABLE
from broker.storage.replication import Replication

log = logging.getLogger(__name__)

# Scripts call XREADGROUP (allowed in scripts since 7.0) and rely on 7.0's XAUTOCLAIM
# reply (deleted ids) and XINFO/XGROUP fields; FUNCTION-free, so nothing newer is needed.
MIN_VERSION = (7, 0, 0)
# WAITAOF came with Redis 7.2 (Valkey reports redis_version 7.2.4 and has it too).
WAITAOF_VERSION = (7, 2, 0)


class ServerRefused(RuntimeError):
    """The server would lose or drop events; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What one server (a master) says about itself."""

    name: str
    run_id: str
    version: tuple[int, ...]
    eviction_policy: str | None  # None: the server does not say
    aof_enabled: bool
    rdb_saves: bool | None  # a save schedule is set; None: CONFIG GET is disabled
    replicas: int

    @property
    def has_waitaof(self) -> bool:
        return self.version >= WAITAOF_VERSION


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


async def _facts(redis: Any, name: str, **target: Any) -> ServerFacts | None:
    """None: the server does not answer INFO."""
    info: dict[str, Any] = {}
    for section in ("server", "memory", "persistence", "replication"):
        try:
            reply = await redis.info(section, **target)
        except ResponseError:
            return None
        if target and reply and all(isinstance(value, dict) for value in reply.values()):
            reply = next(iter(reply.values()))  # a cluster answers per node
        info.update(reply)
    try:
        reply = await redis.config_get("save", **target)
        if target and reply and all(isinstance(value, dict) for value in reply.values()):
            reply = next(iter(reply.values()))
        rdb_saves: bool | None = bool(str(reply.get("save", "")).strip())
    except ResponseError:  # CONFIG disabled or renamed (managed Redis)
        rdb_saves = None
    policy = info.get("maxmemory_policy")
    return ServerFacts(
        name=name,
        run_id=str(info.get("run_id", "")),
        version=_version(str(info.get("redis_version", "0"))),
        eviction_policy=None if policy is None else str(policy),
        aof_enabled=int(info.get("aof_enabled", 0)) == 1,
        rdb_saves=rdb_saves,
        replicas=int(info.get("connected_slaves", 0)),
    )


async def read_masters(redis: Any) -> list[ServerFacts | None]:
    """The facts of every master (the one server, or each of a cluster); None: no INFO."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # the masters are known only once the slots are read
        return [await _facts(redis, node.name, target_nodes=node) for node in redis.get_primaries()]
    return [await _facts(redis, "redis")]


def judge(facts: ServerFacts, settings: Settings) -> list[str]:
    """Warnings about `facts`; raises `ServerRefused` for a server that would drop events."""
    where = f"Redis ({facts.name})"
    if facts.version < MIN_VERSION:
        raise ServerRefused(
            f"{where} is version {'.'.join(map(str, facts.version))}; the broker's scripts "
            f"need Redis {'.'.join(map(str, MIN_VERSION))} or newer (or Valkey)"
        )
    warnings = []
    if facts.eviction_policy is None:
        warnings.append(f"{where} does not report its maxmemory-policy; it must be noeviction")
    elif facts.eviction_policy != "noeviction" and not settings.redis_allow_eviction:
        raise ServerRefused(
            f"{where} has maxmemory-policy {facts.eviction_policy}: when memory runs short it "
            "deletes keys, which silently drops pending events. Set maxmemory-policy "
            "noeviction (a full Redis then refuses new events instead), or set "
            "BROKER_REDIS_ALLOW_EVICTION=true to accept the loss"
        )
    if not facts.aof_enabled and facts.rdb_saves is False and facts.replicas == 0:
        warnings.append(
            f"{where} has no persistence (no appendonly, no save) and no replicas: "
            "a restart of Redis loses every pending event"
        )
    elif facts.rdb_saves is None and not facts.aof_enabled and facts.replicas == 0:
        warnings.append(
            f"{where}: appendonly is off, there are no replicas and CONFIG GET is disabled, "
            "so the save schedule is unknown; without one a restart loses every pending event"
        )
    if settings.redis_wait_replicas > facts.replicas:
        warnings.append(
            f"{where} has {facts.replicas} replica(s) connected but "
            f"BROKER_REDIS_WAIT_REPLICAS={settings.redis_wait_replicas}: writes are refused "
            "until enough replicas are connected"
        )
    return warnings


class ServerWatch:
    """Checks the server at start-up, and again whenever it is a different one.

    A different server (Redis restarted, a failover, a cluster master replaced) shows
    as a new `run_id`; the watcher looks every `CHECK_SECONDS`. A server refused after
    start-up makes `problem` the reason (readiness reports it) until one passes.
    """

    CHECK_SECONDS = 5.0

    def __init__(self, redis: Any, settings: Settings, replication: Replication) -> None:
        self.redis = redis
        self.settings = settings
        self.replication = replication
        self.problem: str | None = None
        self._checked: list[str] = []  # run ids of the masters last checked

    async def check(self) -> None:
        """Check the masters if they changed; raises `ServerRefused`."""
        masters = await read_masters(self.redis)
        run_ids = ["" if facts is None else facts.run_id for facts in masters]
        if run_ids == self._checked:
            return
        try:
            for facts in masters:
                if facts is None:
                    log.warning("Redis does not answer INFO: its settings were not checked")
                    continue
                for warning in judge(facts, self.settings):
                    log.warning("%s", warning)
        except ServerRefused as error:
            self.problem = str(error)
            raise
        self.problem = None
        self._checked = run_ids
        # WAITAOF where every master has it and appends to a file.
        self.replication.local_aof = all(
            facts is not None and facts.has_waitaof and facts.aof_enabled for facts in masters
        )

    async def watch(self) -> None:
        """Re-check forever (until cancelled); errors reaching Redis are retried."""
        while True:
            await asyncio.sleep(self.CHECK_SECONDS)
            try:
                await self.check()
            except ServerRefused as error:
                log.error("%s", error)
            except UNAVAILABLE as error:
                log.debug("server check: %s", error)
