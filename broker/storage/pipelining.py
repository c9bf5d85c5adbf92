"""Automatic pipelining: script calls made in the same event-loop turn go to Redis together.

Under concurrent requests, each fetch or acknowledgement is one script call, and sending
each on its own costs a pool checkout, a write and a read system call and a timer. Calls
queued while the loop is busy are sent as one non-transactional pipeline on the next turn
instead (what ioredis' `enableAutoPipelining` does). Nothing changes for the caller: each
gets its own reply or exception, and a lone call goes out on its own as before. Each call
is still one atomic script; a pipeline only shares the connection and the system calls.
redis-py refuses scripts in a cluster pipeline, so on a cluster the calls go out one by one.

With `BROKER_REDIS_WAIT_REPLICAS` set, a batch holding a call that confirms something
(`confirm=True`) ends with the WAIT that confirms it, on the same connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from broker.storage.replication import Replication, ScriptCall, run_confirmed

# Calls sent in one pipeline at most; more wait for the next one (bounds a reply's size).
MAX_BATCH = 128

# script, keys, args, the caller's future, whether the reply confirms a write
_Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]", bool]


class Pipeliner:
    def __init__(self, redis: Any, replication: Replication | None = None) -> None:
        self.redis = redis
        self.replication = replication or Replication()
        self.batching = not isinstance(redis, RedisCluster)
        self.queue: list[_Call] = []
        self.sending: set[asyncio.Task[None]] = set()
        self.pipelines = self.pipelined_calls = 0  # pipelines sent, calls in them (for tests)

    def call(
        self, script: AsyncScript, keys: list[Any], args: list[Any], confirm: bool = False
    ) -> asyncio.Future[Any]:
        """Queue `script(keys, args)`; the future gets its reply.

        `confirm`: the reply confirms a write, so it waits for the replicas (when asked).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.queue:
            loop.call_soon(self._flush)
        self.queue.append((script, keys, args, future, confirm))
        return future

    def _flush(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            task = asyncio.ensure_future(self._send(batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        batch = [call for call in batch if not call[3].done()]  # a cancelled caller's never runs
        if not batch:
            return
        try:
            replies = await self._replies(batch)
        except BaseException:  # this task was cancelled (shutdown): so are its callers
            for _, _, _, future, _ in batch:
                future.cancel()
            raise
        for (_, _, _, future, _), reply in zip(batch, replies, strict=True):
            if future.done():  # the request was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _replies(self, batch: list[_Call]) -> list[Any]:
        """Each call's reply or exception, in order."""
        confirming = self.replication.enabled and any(call[4] for call in batch)
        if not confirming and len(batch) == 1:
            script, keys, args, _, _ = batch[0]
            return [await _reply(script(keys=keys, args=args))]
        if not self.batching:
            return list(await asyncio.gather(*(self._alone(call) for call in batch)))
        self.pipelines += 1
        self.pipelined_calls += len(batch)
        waits = self.replication.waits() if confirming else []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                for wait in waits:
                    pipe.execute_command(*wait)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as error:  # the connection failed: every call did
            return [error] * len(batch)
        replies, wait_replies = replies[: len(batch)], replies[len(batch) :]
        if confirming:
            try:
                self.replication.check(wait_replies)
            except Exception as error:  # not replicated: no confirmation holds
                replies = [
                    error if call[4] and not isinstance(reply, Exception) else reply
                    for call, reply in zip(batch, replies, strict=True)
                ]
        for i, call in enumerate(batch):
            if isinstance(replies[i], NoScriptError):  # Redis restarted: load and rerun
                replies[i] = await self._alone(call)
        return replies

    async def _alone(self, call: _Call) -> Any:
        """One call's reply or exception, sent on its own (with its WAIT if it confirms)."""
        script, keys, args, _, confirm = call
        if not (confirm and self.replication.enabled):
            return await _reply(script(keys=keys, args=args))
        try:
            replies = await run_confirmed(
                self.redis, self.replication, keys[0], [ScriptCall(script, keys, args)]
            )
        except Exception as error:
            return error
        return replies[0]


async def _reply(call: Any) -> Any:
    """The reply of an awaitable Redis call, or the exception it raised."""
    try:
        return await call
    except Exception as error:
        return error
