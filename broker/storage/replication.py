"""Confirmed means replicated: writes followed by WAIT (and WAITAOF) on their own connection.

`WAIT n timeout` answers how many replicas have every write the *same connection* made
before it, so a confirmed write and its WAIT always go out together in one pipeline (on a
cluster: to the node that owns the write's key). Fewer replicas than asked within the
timeout is a `NotReplicated` refusal the caller may retry; the write itself may survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from broker.errors import NotReplicated

Command = tuple[Any, ...]


@dataclass(slots=True)
class Replication:
    """What a confirmation waits for: `replicas` copies within `timeout_ms`."""

    replicas: int = 0
    timeout_ms: int = 2000
    # The server has WAITAOF and writes an append-only file: also wait for its fsync.
    local_aof: bool = False

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    def waits(self) -> list[Command]:
        commands: list[Command] = [("WAIT", self.replicas, self.timeout_ms)]
        if self.local_aof:
            commands.append(("WAITAOF", 1, 0, self.timeout_ms))
        return commands

    def check(self, replies: Sequence[Any]) -> None:
        """Raise unless the replies to `waits()` show every copy that was asked for."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if int(replies[0]) < self.replicas:
            raise NotReplicated()
        if self.local_aof and int(replies[1][0]) < 1:
            raise NotReplicated()


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script call among a confirmed write's commands."""

    script: AsyncScript
    keys: Sequence[Any]
    args: Sequence[Any]

    def command(self) -> Command:
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


async def run_confirmed(
    redis: Any, replication: Replication, key: str, calls: Sequence[Command | ScriptCall]
) -> list[Any]:
    """Run `calls` (all on `key`'s slot), then the waits, on one connection.

    Each call's reply or exception, in order; raises when the waits fall short. A script
    the server lost (a restart, a failover) is loaded and everything run again once.
    """
    commands = [call.command() if isinstance(call, ScriptCall) else call for call in calls]
    replies = await _pipeline(redis, key, [*commands, *replication.waits()])
    if any(isinstance(reply, NoScriptError) for reply in replies[: len(calls)]):
        for call in calls:
            if isinstance(call, ScriptCall):
                await redis.script_load(call.script.script)
        replies = await _pipeline(redis, key, [*commands, *replication.waits()])
    for reply in replies[: len(calls)]:
        if isinstance(reply, (MovedError, AskError, TryAgainError)):
            # The slot has a new master (a failover): re-read the slot map; the caller
            # sees a retryable error, as for any failover.
            await redis.nodes_manager.initialize()
            raise reply
    replication.check(replies[len(calls) :])
    return replies[: len(calls)]


async def _pipeline(redis: Any, key: str, commands: Sequence[Command]) -> list[Any]:
    if isinstance(redis, RedisCluster):
        # Every command to the node owning `key`: redis-py sends one node's share of a
        # pipeline on one connection. Redirections are not followed (the WAIT would stay
        # behind on the old node): a moved slot fails this call, and the client's own
        # commands refresh the slot map meanwhile.
        node = redis.get_node_from_key(key)
        pipe = redis.pipeline()
        for command in commands:
            pipe.execute_command(*command, target_nodes=node)
        replies: list[Any] = await pipe.execute(raise_on_error=False, allow_redirections=False)
        return replies
    async with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        replies = await pipe.execute(raise_on_error=False)
        return replies
