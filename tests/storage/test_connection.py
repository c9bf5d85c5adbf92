"""The broker's Redis client: a busy pool makes commands wait, not fail, for a while."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.settings import Settings
from broker.storage.connection import connect
from broker.storage.embedded import EmbeddedRedis, free_port


def client(server: EmbeddedRedis, wait_seconds: float, url: str | None = None) -> Redis:
    """The broker's own client, with a pool of two connections."""
    settings = Settings(redis_url=url or server.url)
    settings = settings.model_copy(update={"redis_max_connections": 2})  # below its minimum
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("broker.storage.connection.POOL_WAIT_SECONDS", wait_seconds)
        redis = connect(settings)
    assert isinstance(redis, Redis)
    return redis


async def test_a_command_waits_for_a_free_connection(redis_server: EmbeddedRedis) -> None:
    redis = client(redis_server, wait_seconds=5.0)
    try:
        # Two commands hold both connections for 0.3 s; the third gets one after them.
        held = [asyncio.create_task(redis.blpop(["nothing"], timeout=0.3)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert await redis.ping() is True
        assert await asyncio.gather(*held) == [None, None]
        # Every connection went back: the pool serves as many commands as before.
        assert await asyncio.gather(redis.ping(), redis.ping()) == [True, True]
    finally:
        await redis.aclose()


async def test_a_command_fails_when_no_connection_frees_up_in_time(
    redis_server: EmbeddedRedis,
) -> None:
    redis = client(redis_server, wait_seconds=0.1)
    try:
        held = [asyncio.create_task(redis.blpop(["nothing"], timeout=1)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.ping()
        await asyncio.gather(*held)
        assert await redis.ping() is True
    finally:
        await redis.aclose()


async def test_failed_connects_leave_the_pool_as_it_was(redis_server: EmbeddedRedis) -> None:
    """While Redis is down every command fails, and each gives back exactly what it took."""
    redis = client(redis_server, 5.0, f"redis://127.0.0.1:{free_port()}")  # nothing there
    pool = redis.connection_pool
    try:
        for _ in range(5):
            with pytest.raises(RedisConnectionError):
                await redis.ping()
        # Redis is back: both connections can be taken, and a third command still waits.
        pool.connection_kwargs["port"] = redis_server.port
        pool.reset()  # forget the connections made for the old port
        held = [asyncio.create_task(redis.blpop(["nothing"], timeout=0.3)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert await redis.ping() is True
        assert await asyncio.gather(*held) == [None, None]
    finally:
        await redis.aclose()


def test_sentinels_replace_the_url_and_must_be_host_and_port() -> None:
    settings = Settings(redis_sentinels="a.svc:26379, b.svc:26379")  # type: ignore[arg-type]
    assert settings.sentinel_addresses == [("a.svc", 26379), ("b.svc", 26379)]
    assert settings.external_redis
    with pytest.raises(ValidationError, match="replaces BROKER_REDIS_URL"):
        Settings(redis_sentinels="a:26379", redis_url="redis://a:6379")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="is not host:port"):
        Settings(redis_sentinels="a.svc")  # type: ignore[arg-type]


def test_with_sentinel_a_confirmation_waits_for_a_replica_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sentinels = "a.svc:26379"
    assert Settings(redis_sentinels=sentinels).redis_wait_replicas == 1  # type: ignore[arg-type]
    assert Settings(redis_sentinels=sentinels, redis_wait_replicas=0).redis_wait_replicas == 0  # type: ignore[arg-type]
    assert Settings(redis_url="redis://a:6379").redis_wait_replicas == 0
    monkeypatch.setenv("BROKER_REDIS_WAIT_REPLICAS", "0")
    assert Settings(redis_sentinels=sentinels).redis_wait_replicas == 0  # type: ignore[arg-type]
