"""Fetch and acknowledge cost stays flat as the backlog grows, and nothing is left behind.

Cost is counted, not timed: `CONFIG RESETSTAT`, one operation, then `INFO commandstats`
(commands a Lua script runs are counted too). A flat operation runs exactly the same
commands with 10 or 5,000 pending events, and with 1 or 200 listeners on its topic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis

from broker.models import Caller, ListenerFilter
from broker.storage.embedded import EmbeddedRedis
from broker.storage.store import RETRY_PUMP_BATCH
from broker.tokens import EventToken
from tests.stepped import Stepped, check_listener, lane_keys, stepped_broker

# Slow: own broker processes or large backlogs (`pytest -m "not slow"` leaves them out).
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

OWNER = Caller(uuid4(), mo_emitter=True)
HOUR = 3600.0
# Bookkeeping of the measurement itself, not of the operation measured.
NOT_THE_OPERATION = {"config|resetstat", "info", "client|setinfo", "hello", "ping"}


@pytest.fixture
async def real(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def system(real: Redis) -> AsyncIterator[Stepped]:
    async with stepped_broker(real, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
        yield system


async def commands_run(redis: Redis, operation: Callable[[], Awaitable[Any]]) -> Counter[str]:
    """Which Redis commands `operation` ran, and how often."""
    await redis.config_resetstat()
    await operation()
    stats = await redis.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(values["calls"])
            for name, values in stats.items()
            if name.removeprefix("cmdstat_") not in NOT_THE_OPERATION
        }
    )


async def declare(system: Stepped, user_key: str) -> UUID:
    return (await system.broker.declare_listener(OWNER, "mo", user_key, "person")).uuid


async def send_many(system: Stepped, count: int, *, distinct_priorities: bool = False) -> None:
    for n in range(count):
        await system.broker.send(
            OWNER, "mo", "person", f"s{n}", n + 1 if distinct_priorities else 5
        )
    await system.fan_out()


async def fetch(system: Stepped, listener: UUID) -> EventToken:
    event = await system.broker.fetch(OWNER, listener)
    assert event is not None
    return EventToken(listener, event.generation, event.subject)


async def warm_up(system: Stepped, listener: UUID) -> None:
    """Load the scripts (the first call of each also runs SCRIPT LOAD) and create the lanes."""
    await fetch(system, listener)
    await system.broker.acknowledge(OWNER, EventToken(listener, "0", "no such subject"))


async def fetch_and_ack_cost(system: Stepped, listener: UUID) -> tuple[Counter[str], Counter[str]]:
    redis: Any = system.redis
    token: EventToken | None = None

    async def fetch_one() -> None:
        nonlocal token
        token = await fetch(system, listener)

    fetched = await commands_run(redis, fetch_one)
    assert token is not None
    acknowledged = await commands_run(redis, lambda: system.broker.acknowledge(OWNER, token))
    return fetched, acknowledged


async def measure_with_backlog(
    redis: Redis, pending: int, *, distinct_priorities: bool = False
) -> tuple[Counter[str], Counter[str]]:
    await redis.flushall()
    async with stepped_broker(redis, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
        listener = await declare(system, "l")
        await send_many(system, pending, distinct_priorities=distinct_priorities)
        assert await system.store.count_pending(listener) == pending
        await warm_up(system, listener)
        return await fetch_and_ack_cost(system, listener)


@pytest.mark.parametrize("distinct_priorities", [False, True], ids=["one-lane", "many-lanes"])
async def test_fetch_and_acknowledge_cost_does_not_grow_with_the_backlog(
    real: Redis, distinct_priorities: bool
) -> None:
    small = await measure_with_backlog(real, 10, distinct_priorities=distinct_priorities)
    large = await measure_with_backlog(real, 5_000, distinct_priorities=distinct_priorities)
    assert small[0] == large[0], "fetch"
    assert small[1] == large[1], "acknowledge"
    assert small[0]["evalsha"] == small[1]["evalsha"] == 1, "each is one script call"


async def measure_with_listeners(redis: Redis, listeners: int) -> tuple[Counter[str], Counter[str]]:
    await redis.flushall()
    async with stepped_broker(redis, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
        uuids = [await declare(system, f"l{n}") for n in range(listeners)]
        await send_many(system, 10)
        await warm_up(system, uuids[0])
        return await fetch_and_ack_cost(system, uuids[0])


async def test_fetch_and_acknowledge_cost_does_not_grow_with_the_number_of_listeners(
    real: Redis,
) -> None:
    assert await measure_with_listeners(real, 1) == await measure_with_listeners(real, 200)


async def test_a_fetch_that_finds_everything_in_back_off_costs_the_same_for_any_backlog(
    real: Redis,
) -> None:
    costs = []
    for pending in (10, 2_000):
        await real.flushall()
        async with stepped_broker(real, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
            listener = await declare(system, "l")
            await send_many(system, pending)
            for _ in range(pending):
                await fetch(system, listener)
            nothing = await commands_run(
                real, lambda uuid=listener: system.broker.fetch(OWNER, uuid)
            )
            costs.append(nothing)
    assert costs[0] == costs[1]


async def test_a_fetch_moves_a_bounded_batch_of_ended_back_offs(real: Redis) -> None:
    costs = []
    for due in (2 * RETRY_PUMP_BATCH, 20 * RETRY_PUMP_BATCH):
        await real.flushall()
        async with stepped_broker(real, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
            listener = await declare(system, "l")
            await send_many(system, due)
            for _ in range(due):
                await fetch(system, listener)
            retry = system.store.keys.listener(listener).retry
            await real.zadd(retry, dict.fromkeys(await real.zrange(retry, 0, -1), 0))
            costs.append(await commands_run(real, lambda uuid=listener: fetch(system, uuid)))
            assert await real.zcard(retry) == due - RETRY_PUMP_BATCH + 1
    assert costs[0] == costs[1]


async def test_fan_out_of_one_event_costs_the_same_for_any_backlog(real: Redis) -> None:
    costs = []
    for pending in (10, 5_000):
        await real.flushall()
        async with stepped_broker(real, retry_min_seconds=HOUR, retry_max_seconds=HOUR) as system:
            await declare(system, "l")
            await send_many(system, pending)
            await system.broker.send(OWNER, "mo", "person", "s1", 3)  # a re-send
            costs.append(await commands_run(real, system.fan_out))
    assert costs[0] == costs[1]


# Nothing left behind ----------------------------------------------------------------------


async def test_acknowledging_everything_leaves_only_the_listener_itself(system: Stepped) -> None:
    redis: Any = system.redis
    listener = await declare(system, "l")
    await send_many(system, 300, distinct_priorities=True)
    await system.broker.silence(OWNER, ListenerFilter(), [f"s{n}" for n in range(0, 300, 7)])
    tokens = [await fetch(system, listener) for _ in range(150)]
    await send_many(system, 50)  # re-sends: half of those tokens go stale
    await system.broker.rerun(OWNER, None, None, None, None)
    while (event := await system.broker.fetch(OWNER, listener)) is not None:
        tokens.append(EventToken(listener, event.generation, event.subject))
    for token in tokens:
        await system.broker.acknowledge(OWNER, token)

    keys = system.store.keys.listener(listener)
    assert await system.store.count_pending(listener) == 0
    left = [key async for key in redis.scan_iter(match=f"*{listener}*")]
    assert left == [keys.meta]
    assert await redis.hget(keys.meta, "silenced") == "0"
    for shard in range(system.store.keys.shards):
        assert await system.store.ingest_backlog(shard) == 0


async def test_a_resent_event_keeps_exactly_one_stream_entry(system: Stepped) -> None:
    redis: Any = system.redis
    listener = await declare(system, "l")
    await send_many(system, 10)
    for _ in range(4):
        await fetch(system, listener)
    for _ in range(3):
        await send_many(system, 10)  # every subject re-sent, delivered or not
        await fetch(system, listener)

    keys = system.store.keys.listener(listener)
    lanes = await lane_keys(redis, keys)
    assert sum([await redis.xlen(lane) for lane in lanes]) == 10
    assert len(await check_listener(redis, keys)) == 10


async def test_re_sending_one_subject_forever_does_not_grow_memory(system: Stepped) -> None:
    redis: Any = system.redis
    listener = await declare(system, "l")
    await send_many(system, 1)  # s0 stays pending in the lane the whole time

    async def resend(times: int) -> int:
        for _ in range(times):
            await system.broker.send(OWNER, "mo", "person", "busy", 5)
            await system.fan_out()
            await fetch(system, listener)
        keys = system.store.keys.listener(listener)
        owned = [*await lane_keys(redis, keys), keys.events, keys.index, keys.retry, keys.lanes]
        ingest = [system.store.keys.ingest(s) for s in range(system.store.keys.shards)]
        sizes = [await redis.memory_usage(key, samples=0) or 0 for key in owned + ingest]
        return sum(sizes)

    after_warm_up = await resend(150)
    after_many_more = await resend(750)
    assert after_many_more <= after_warm_up * 1.25, (after_warm_up, after_many_more)


async def test_storage_invariants_hold_after_a_busy_mix(system: Stepped) -> None:
    redis: Any = system.redis
    first, second = await declare(system, "first"), await declare(system, "second")
    await send_many(system, 500, distinct_priorities=True)
    await system.broker.silence(OWNER, ListenerFilter(), [f"s{n}" for n in range(0, 500, 3)])
    tokens = [await fetch(system, first) for _ in range(200)]
    await send_many(system, 100)
    for token in tokens[::2]:
        await system.broker.acknowledge(OWNER, token)
    await system.broker.unsilence(OWNER, None, [f"s{n}" for n in range(0, 500, 9)], None)
    await system.broker.rerun(OWNER, ListenerFilter(uuids=frozenset({second})), None, [7], None)
    for _ in range(100):
        await fetch(system, second)

    for listener in (first, second):
        pending = await check_listener(redis, system.store.keys.listener(listener))
        assert len(pending) == await system.store.count_pending(listener)
    assert await system.store.count_pending(second) == 500
