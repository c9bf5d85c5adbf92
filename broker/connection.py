"""The Redis client: fails fast when Redis is down, waits briefly when the pool is busy."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.settings import Settings
from broker.store import RedisClient

POOL_WAIT_SECONDS = 5.0  # longest a command waits for a free Redis connection


class WaitingConnectionPool(ConnectionPool):
    """A pool that makes a command wait up to `wait_seconds` for a free connection.

    redis-py's BlockingConnectionPool does the same with a condition variable and a
    timer on every checkout (15-25 us of CPU a command, measured); a semaphore costs
    nothing while connections are free, and only a command that has to wait sets a timer.
    """

    def __init__(self, *args: Any, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_seconds = wait_seconds
        self._free = asyncio.Semaphore(self.max_connections)
        # Connections handed out, each holding one permit. redis-py releases a connection
        # that failed to connect itself, before get_connection raises: that one holds none.
        self._holding: set[AbstractConnection] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._free.locked():
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._free.acquire()
            except TimeoutError as error:
                raise RedisConnectionError("No connection available.") from error
        else:
            await self._free.acquire()
        try:
            connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            self._free.release()
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self._free.release()

    @property
    def free(self) -> int:
        """Connections that can be handed out without waiting."""
        return self._free._value  # asyncio.Semaphore has no public reader


def connect(settings: Settings) -> RedisClient:
    """A client for `BROKER_REDIS_URL` that fails fast instead of hanging when Redis is down."""
    assert settings.redis_url is not None
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 10.0,
        "health_check_interval": 15,
        # One quick retry on a fresh connection: after Redis restarts, pooled
        # connections are dead and each would otherwise fail one request. Not on
        # timeouts, which would only double the wait.
        "retry": Retry(
            ExponentialBackoff(cap=0.2, base=0.05),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
    }
    if settings.redis_password is not None:
        options["password"] = settings.redis_password
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_cluster:
        # The cluster client retries (and re-discovers the slots) on its own.
        options.pop("health_check_interval")
        options.pop("retry")
        options["max_connections"] = settings.redis_max_connections
        return RedisCluster.from_url(settings.redis_url, **options)
    # Waiting instead of failing at once: ~17 connections are held by blocking fan-out
    # reads and pub/sub, and a burst while Redis is briefly busy would otherwise be refused.
    pool = WaitingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        wait_seconds=POOL_WAIT_SECONDS,
        **options,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
