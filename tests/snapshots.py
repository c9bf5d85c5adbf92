"""Whole-database snapshots, to show that a refused request wrote nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis


async def snapshot(redis: Redis) -> dict[str, Any]:
    """Every key with its type and whole value."""
    state: dict[str, Any] = {}
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = kind
        state[key] = (kind, value)
    return state


@asynccontextmanager
async def nothing_written(redis: Redis) -> AsyncIterator[None]:
    before = await snapshot(redis)
    yield
    assert await snapshot(redis) == before
