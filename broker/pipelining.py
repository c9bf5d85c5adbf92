"""Automatic pipelining: script calls made in the same event-loop turn go to Redis together.

Under concurrent requests, each fetch or acknowledgement is one script call, and sending
each on its own costs a pool checkout, a write and a read system call and a timer. Calls
queued while the loop is busy are sent as one non-transactional pipeline on the next turn
instead (what ioredis' `enableAutoPipelining` does). Nothing changes for the caller: each
gets its own reply or exception, and a lone call goes out on its own as before. Each call
is still one atomic script; a pipeline only shares the connection and the system calls.
redis-py refuses scripts in a cluster pipeline, so on a cluster the calls go out one by one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# Calls sent in one pipeline at most; more wait for the next one (bounds a reply's size).
MAX_BATCH = 128

_Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]


class Pipeliner:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.batching = not isinstance(redis, RedisCluster)
        self.queue: list[_Call] = []
        self.sending: set[asyncio.Task[None]] = set()
        self.pipelines = self.pipelined_calls = 0  # pipelines sent, calls in them (for tests)

    def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Queue `script(keys, args)`; the future gets its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.queue:
            loop.call_soon(self._flush)
        self.queue.append((script, keys, args, future))
        return future

    def _flush(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            task = asyncio.ensure_future(self._send(batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        batch = [call for call in batch if not call[3].done()]  # a cancelled caller's never runs
        try:
            replies = await self._replies(batch)
        except BaseException:  # this task was cancelled (shutdown): so are its callers
            for *_, future in batch:
                future.cancel()
            raise
        for (_, _, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the request was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _replies(self, batch: list[_Call]) -> list[Any]:
        """Each call's reply or exception, in order."""
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            return [await _reply(script(keys=keys, args=args))]
        if not self.batching:
            return list(
                await asyncio.gather(
                    *(_reply(script(keys=keys, args=args)) for script, keys, args, _ in batch)
                )
            )
        self.pipelines += 1
        self.pipelined_calls += len(batch)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as error:  # the connection failed: every call did
            return [error] * len(batch)
        for i, (script, keys, args, _) in enumerate(batch):
            if isinstance(replies[i], NoScriptError):  # Redis restarted: load and rerun
                replies[i] = await _reply(script(keys=keys, args=args))
        return replies


async def _reply(call: Any) -> Any:
    """The reply of an awaitable Redis call, or the exception it raised."""
    try:
        return await call
    except Exception as error:
        return error
