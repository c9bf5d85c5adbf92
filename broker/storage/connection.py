"""The Redis client: fails fast when Redis is down, waits briefly when the pool is busy."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedSSLConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from broker.settings import Settings
from broker.storage.store import RedisClient

POOL_WAIT_SECONDS = 5.0  # longest a command waits for a free Redis connection

# What the client raises when the store cannot answer right now: redis-py's own errors,
# the sockets', and those of a cluster that is reconfiguring (during a failover a slot
# can be uncovered for a moment: SlotNotCoveredError, which is no RedisError). OSError
# covers `asyncio.timeout`'s TimeoutError too.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, OSError, RedisClusterException)


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """The waiting pool, asking the sentinels for the master whenever it (re)connects.

    SentinelConnectionPool's connections look the master up on every connect, so after
    a failover each dead connection is replaced by one to the new master on first use.
    """


def connect(settings: Settings) -> RedisClient:
    """A client for Redis that fails fast instead of hanging when Redis is down."""
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
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_sentinels:
        return _through_sentinels(settings, options)
    assert settings.redis_url is not None
    if settings.redis_cluster:
        # The cluster client retries (and re-discovers the slots) on its own.
        options.pop("health_check_interval")
        options.pop("retry")
        options["max_connections"] = settings.redis_max_connections
        return RedisCluster.from_url(settings.redis_url, **options)
    # Waiting instead of failing at once: ~17 connections are held by blocking fan-out
    # reads and pub/sub, and a burst while Redis is briefly busy would otherwise be refused.
    # (A pool of our own that waited on a semaphore gave no measurable gain over this one:
    # benchmarks/RESULTS.md, "earn it or delete it".)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_SECONDS,
        **options,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _through_sentinels(settings: Settings, options: dict[str, Any]) -> Redis:
    """A client for the master that `BROKER_REDIS_SENTINELS` currently name."""
    sentinel_options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 1.0,
    }
    if settings.redis_sentinel_password is not None:
        sentinel_options["password"] = settings.redis_sentinel_password.get_secret_value()
    ca_file = options.pop("ssl_ca_certs", None)
    if settings.redis_sentinel_tls:
        sentinel_options["ssl"] = True
        options["connection_class"] = SentinelManagedSSLConnection
        if ca_file is not None:
            sentinel_options["ssl_ca_certs"] = options["ssl_ca_certs"] = ca_file
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    master: Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_SECONDS,
        **options,
    )
    return master
