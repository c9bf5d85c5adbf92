"""Script calls made together go to Redis in one pipeline, each with its own reply."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from broker.storage.pipelining import Pipeliner

pytestmark = pytest.mark.cluster

ECHO = "return ARGV[1] .. '@' .. KEYS[1]"
FAIL_ON_X = "if ARGV[1] == 'x' then return redis.error_reply('no x') end return ARGV[1]"


async def test_concurrent_calls_share_a_pipeline_and_get_their_own_replies(redis: Redis) -> None:
    pipeliner = Pipeliner(redis)
    echo = redis.register_script(ECHO)
    replies = await asyncio.gather(
        *(pipeliner.call(echo, [f"{{k}}{i}"], [str(i)]) for i in range(10))
    )
    assert replies == [f"{i}@{{k}}{i}" for i in range(10)]
    if pipeliner.batching:  # not on a cluster
        assert (pipeliner.pipelines, pipeliner.pipelined_calls) == (1, 10)


async def test_a_failing_call_fails_alone(redis: Redis) -> None:
    pipeliner = Pipeliner(redis)
    script = redis.register_script(FAIL_ON_X)
    replies = await asyncio.gather(
        *(pipeliner.call(script, ["{k}"], [arg]) for arg in ("a", "x", "b")),
        return_exceptions=True,
    )
    assert replies[0] == "a" and replies[2] == "b"
    assert isinstance(replies[1], ResponseError) and "no x" in str(replies[1])


async def test_scripts_lost_by_a_restarted_server_are_loaded_again(redis: Redis) -> None:
    pipeliner = Pipeliner(redis)
    echo = redis.register_script(ECHO)
    assert await pipeliner.call(echo, ["{k}"], ["1"]) == "1@{k}"
    await redis.script_flush()
    replies = await asyncio.gather(*(pipeliner.call(echo, ["{k}"], [str(i)]) for i in range(3)))
    assert replies == ["0@{k}", "1@{k}", "2@{k}"]


async def test_a_cancelled_caller_does_not_disturb_the_others(redis: Redis) -> None:
    pipeliner = Pipeliner(redis)
    echo = redis.register_script(ECHO)
    first = pipeliner.call(echo, ["{k}"], ["1"])
    second = pipeliner.call(echo, ["{k}"], ["2"])
    first.cancel()
    assert await second == "2@{k}"
    assert await pipeliner.call(echo, ["{k}"], ["3"]) == "3@{k}"


async def test_a_call_cancelled_before_it_is_sent_never_runs(redis: Redis) -> None:
    pipeliner = Pipeliner(redis)
    incr = redis.register_script("return redis.call('INCR', KEYS[1])")
    cancelled = pipeliner.call(incr, ["{k}n"], [])
    kept = pipeliner.call(incr, ["{k}n"], [])
    cancelled.cancel()
    assert await kept == 1
    assert await redis.get("{k}n") == "1"
